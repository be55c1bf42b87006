"""The Debian packages: build all four once per session, inspect them, run the native one.

packaging/build-deb.sh (what `make deb` runs) builds, on this one machine, a package for
Debian 12 (Python 3.11) and Debian 13 (Python 3.13) on amd64 and arm64, with wheels pip
fetches for each target's CPython and CPU (from pip's cache or the package registry: that is
build time). Every package is checked from its archive alone: control fields, contents, and
the ELF header of every bundled extension module. The one that fits this machine is also
extracted (`dpkg -x`) under a scratch prefix and run offline: the package's /usr/bin/gatewayd
wrapper finds its venv relative to itself, and the venv (a symlink to /usr/bin/python3 plus
pyvenv.cfg) works wherever it sits, so the test runs the very files the box would.
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tomllib
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from email.parser import Parser
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "build-deb.sh"
#: The issue's bound on what a package puts on a box's disk, bytecode included.
MAX_INSTALLED_BYTES = 20_000_000
HARNESS_TAIL = ("amqtt", "typer", "rich", "pygments")
DEBIAN_SYSTEMD = "/usr/lib/python3/dist-packages/systemd"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not (shutil.which("dpkg-deb") and Path("/usr/bin/python3").exists()),
        reason="needs dpkg-deb and the system python3",
    ),
]


@dataclass(frozen=True)
class Target:
    """A box the packages are built for: Debian release, its python3, the CPU."""

    name: str  # build-deb.sh's target name
    debian: int
    python: str
    arch: str  # Debian's name
    machine: str  # the CPU as in extension module file names
    elf_machine: int  # e_machine in the ELF header (EM_X86_64, EM_AARCH64)


TARGETS = (
    Target("bookworm-amd64", 12, "3.11", "amd64", "x86_64", 62),
    Target("bookworm-arm64", 12, "3.11", "arm64", "aarch64", 183),
    Target("trixie-amd64", 13, "3.13", "amd64", "x86_64", 62),
    Target("trixie-arm64", 13, "3.13", "arm64", "aarch64", 183),
)


@dataclass(frozen=True)
class Built:
    """The packages of one build-deb.sh run and its staging area."""

    debs: dict[str, Path]  # target name -> .deb
    workdir: Path


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    """packaging/build-deb.sh run once for the whole session, for every target."""
    out = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("debwork")
    result = subprocess.run(
        [str(BUILD), str(out), *(target.name for target in TARGETS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=540,
        env={**os.environ, "WORKDIR": str(work), "PIP_PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    debs = [Path(line) for line in result.stdout.split()]
    assert len(debs) == len(TARGETS), result.stdout
    assert all(deb.parent == out for deb in debs)
    return Built(dict(zip((t.name for t in TARGETS), debs, strict=True)), work)


def native_target() -> Target | None:
    """The target this machine is: its dpkg architecture and /usr/bin/python3's minor."""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    minor = subprocess.run(
        ["/usr/bin/python3", "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    return next((t for t in TARGETS if (t.arch, t.python) == (arch, minor)), None)


@pytest.fixture(scope="session")
def native() -> Target:
    """The target that runs here; tests that run the package skip on other machines."""
    target = native_target()
    if target is None:
        pytest.skip("this machine is none of the package targets")
    return target


@pytest.fixture(scope="session")
def extracted(built: Built, native: Target, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The native package unpacked into a scratch root with `dpkg -x`."""
    root = tmp_path_factory.mktemp("scratchroot")
    subprocess.run(["dpkg", "-x", str(built.debs[native.name]), str(root)], check=True)
    return root


def project_version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True, check=True
    ).stdout.strip()


def archive(deb: Path) -> tarfile.TarFile:
    """The package's file system tree, read from the archive (nothing extracted)."""
    tree = subprocess.run(["dpkg-deb", "--fsys-tarfile", str(deb)], capture_output=True, check=True)
    return tarfile.open(fileobj=io.BytesIO(tree.stdout))


def members(deb: Path) -> dict[str, tarfile.TarInfo]:
    """Absolute path -> tar entry of everything the package installs."""
    with archive(deb) as tar:
        return {"/" + m.name.removeprefix("./").rstrip("/"): m for m in tar.getmembers()}


@dataclass(frozen=True)
class Elf:
    """What an extension module's ELF header says about where it can run."""

    bits: int
    little_endian: bool
    machine: int
    sections: frozenset[str]


def read_elf(data: bytes) -> Elf:
    """Class, byte order, e_machine and section names of a 64-bit little-endian ELF file."""
    assert data[:4] == b"\x7fELF", "not an ELF file"
    bits = {1: 32, 2: 64}[data[4]]
    little = data[5] == 1
    assert (bits, little) == (64, True), "only 64-bit little-endian targets are packaged"
    (machine,) = struct.unpack_from("<H", data, 18)
    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    entsize, count, names_index = struct.unpack_from("<HHH", data, 0x3A)

    def section(index: int) -> tuple[int, int, int]:
        (name,) = struct.unpack_from("<I", data, shoff + index * entsize)
        offset, size = struct.unpack_from("<QQ", data, shoff + index * entsize + 0x18)
        return name, offset, size

    _, names_at, _ = section(names_index)
    names = set()
    for index in range(count):
        name, _, _ = section(index)
        names.add(data[names_at + name : data.index(b"\0", names_at + name)].decode())
    return Elf(bits, little, machine, frozenset(names))


def extension_modules(deb: Path) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of every `*.so` file the package installs."""
    with archive(deb) as tar:
        for member in tar.getmembers():
            if member.isfile() and member.name.endswith(".so"):
                handle = tar.extractfile(member)
                assert handle is not None
                yield member.name.removeprefix("."), handle.read()


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_file_name_and_control_fields(built: Built, target: Target) -> None:
    """gatewayd_<version>+deb<N>_<arch>.deb; Depends on the matching python3 and python3-systemd."""
    deb = built.debs[target.name]
    version = f"{project_version()}+deb{target.debian}"
    assert deb.name == f"gatewayd_{version}_{target.arch}.deb"
    assert deb_field(deb, "Package") == "gatewayd"
    assert deb_field(deb, "Version") == version
    assert deb_field(deb, "Architecture") == target.arch
    depends = [part.strip() for part in deb_field(deb, "Depends").split(",")]
    major, minor = target.python.split(".")
    assert depends == [
        f"python3 (>= {target.python})",
        f"python3 (<< {major}.{int(minor) + 1})",  # the bundled venv is bound to its minor
        "python3-systemd",  # Debian's build of systemd-python, for the box's libsystemd
        "systemd",
    ]
    installed_kib = int(deb_field(deb, "Installed-Size"))
    print(f"{deb.name}: {deb.stat().st_size / 1e6:.1f} MB archive, {installed_kib} KiB installed")
    assert installed_kib * 1024 < MAX_INSTALLED_BYTES


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_extension_modules_are_built_for_the_target(built: Built, target: Target) -> None:
    """Every bundled *.so names the target's CPython and CPU, and its ELF header agrees."""
    modules = dict(extension_modules(built.debs[target.name]))
    site = f"/usr/lib/gatewayd/lib/python{target.python}/site-packages/"
    # pydantic-core and PyYAML's libyaml binding at least: the check below is not vacuous.
    assert {path.split("/")[-2] for path in modules} >= {"pydantic_core", "yaml"}
    tag = f"cpython-{target.python.replace('.', '')}-{target.machine}-linux-gnu"
    for path, data in modules.items():
        assert path.startswith(site), path
        assert path.endswith((f".{tag}.so", ".abi3.so")), path
        elf = read_elf(data)
        assert elf.machine == target.elf_machine, path
        assert not {name for name in elf.sections if name.startswith(".debug_")}, path


@pytest.mark.parametrize("target", TARGETS, ids=lambda t: t.name)
def test_packages_leave_the_harness_out(built: Built, target: Target) -> None:
    """No gatewayd.sim, amqtt, typer, rich or pygments; systemd is Debian's python3-systemd."""
    entries = members(built.debs[target.name])
    site = f"/usr/lib/gatewayd/lib/python{target.python}/site-packages"
    assert f"{site}/gatewayd/cli.py" in entries
    assert f"{site}/gatewayd/harness.py" in entries
    assert not [path for path in entries if path.startswith(f"{site}/gatewayd/sim")]
    top_level = {path.removeprefix(site + "/").split("/")[0].lower() for path in entries
                 if path.startswith(site + "/")}  # fmt: skip
    distributions = {name.split("-")[0] for name in top_level if name.endswith(".dist-info")}
    assert distributions >= {"gatewayd", "pydantic", "pydantic_core", "structlog", "pymodbus"}
    assert not (top_level | distributions) & set(HARNESS_TAIL)
    # Only the target's Python: no other lib/pythonX.Y tree.
    assert {path.split("/")[5] for path in entries if path.startswith("/usr/lib/gatewayd/lib/")
            and path.count("/") >= 5} == {f"python{target.python}"}  # fmt: skip
    systemd = entries[f"{site}/systemd"]
    assert systemd.issym()
    assert systemd.linkname == DEBIAN_SYSTEMD


def test_wheel_requires_no_harness_dependency(built: Built) -> None:
    """The wheel a plain `pip install gatewayd` gets: amqtt only under the `sim` extra."""
    (wheel,) = (built.workdir / "wheelhouse").glob("gatewayd-*.whl")
    with zipfile.ZipFile(wheel) as zipped:
        (name,) = (n for n in zipped.namelist() if n.endswith(".dist-info/METADATA"))
        metadata = Parser().parsestr(zipped.read(name).decode())
        names = set(zipped.namelist())
    requires = metadata.get_all("Requires-Dist") or []
    unconditional = [req for req in requires if "extra ==" not in req]
    assert {re.split(r"[\s\[<>=~;!(]", req)[0] for req in unconditional} >= {
        "pymodbus", "paho-mqtt", "pydantic", "structlog", "PyYAML"
    }  # fmt: skip
    assert not [req for req in unconditional if req.lower().startswith(HARNESS_TAIL)]
    assert [req for req in requires if req.startswith("amqtt")] == ['amqtt==0.12.1; extra == "sim"']
    assert "sim" in (metadata.get_all("Provides-Extra") or [])
    # The harness's code and the demo's models are in the wheel; their dependencies are not.
    assert "gatewayd/sim/demo/models/sdm630.yaml" in names


def test_contents_are_root_owned_and_complete(built: Built, native: Target) -> None:
    """The daemon, the wrapper, the unit, sysusers/tmpfiles and the example config ship."""
    entries = members(built.debs[native.name])
    for wanted in (
        "/usr/bin/gatewayd",
        "/usr/lib/gatewayd/bin/python",
        "/usr/lib/gatewayd/pyvenv.cfg",
        "/lib/systemd/system/gatewayd.service",
        "/usr/lib/sysusers.d/gatewayd.conf",
        "/usr/lib/tmpfiles.d/gatewayd.conf",
        "/etc/gatewayd/gatewayd.yaml",
        "/etc/gatewayd/models/sdm630.yaml",
        "/usr/share/doc/gatewayd/README.md",
    ):
        assert wanted in entries, wanted
    assert entries["/usr/bin/gatewayd"].mode == 0o755
    # The config may hold inline secrets: never world-readable, from unpacking on.
    assert entries["/etc/gatewayd/gatewayd.yaml"].mode == 0o640
    assert {(m.uname, m.gname) for m in entries.values()} == {("root", "root")}
    assert not any("/site-packages/pip/" in path for path in entries)  # no pip shipped
    # Bytecode is postinst's (made by the box's python3), so dpkg owns none.
    assert not any(path.endswith(".pyc") for path in entries)


def test_conffiles_and_maintainer_scripts(built: Built, native: Target) -> None:
    """Every file under /etc is a conffile; postinst compiles, prerm removes the bytecode."""
    control = built.workdir / built.debs[native.name].stem / "DEBIAN"
    models = sorted(path.name for path in (REPO / "config" / "models").glob("*.yaml"))
    assert (control / "conffiles").read_text().splitlines() == [
        "/etc/gatewayd/gatewayd.yaml",
        *(f"/etc/gatewayd/models/{name}" for name in models),
    ]
    for script in ("postinst", "prerm", "postrm"):
        path = control / script
        assert os.access(path, os.X_OK), script
        subprocess.run(["sh", "-n", str(path)], check=True)
    postinst = (control / "postinst").read_text()
    assert "systemd-sysusers gatewayd.conf" in postinst
    assert "systemd-tmpfiles --create gatewayd.conf" in postinst
    assert '"$venv/bin/python" -I -c "$bytecode"' in postinst
    # ... then the config goes to the service's group, 0640 (unless a statoverride says).
    assert "config=/etc/gatewayd/gatewayd.yaml" in postinst
    assert [line.strip() for line in postinst.splitlines() if '$config"' in line][-2:] == [
        'chown root:gatewayd "$config"',
        'chmod 0640 "$config"',
    ]
    commands = [line for line in postinst.splitlines() if not line.lstrip().startswith("#")]
    # A fresh install never enables or starts the example config.
    assert not [line for line in commands if re.search(r"systemctl (enable|start)\b", line)]
    prerm = (control / "prerm").read_text()
    assert "find /usr/lib/gatewayd/lib -type d -name __pycache__ -prune -exec rm -rf {} +" in prerm


def postinst_bytecode_script() -> str:
    """The Python code postinst runs with the package's venv to make its bytecode."""
    postinst = (REPO / "packaging" / "debian" / "postinst").read_text()
    found = re.search(r"^bytecode='(.*?)'$", postinst, re.S | re.M)
    assert found is not None, "postinst defines no bytecode='...' script"
    return found.group(1)


def test_installed_with_bytecode_fits_in_20_mb(
    extracted: Path, native: Target, tmp_path: Path
) -> None:
    """The native tree, byte-compiled as postinst does it, stays under 20 MB on disk."""
    root = tmp_path / "root"
    shutil.copytree(extracted, root, symlinks=True)
    venv = root / "usr/lib/gatewayd"
    subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", postinst_bytecode_script()],
        check=True, capture_output=True, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    files = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink()]
    site = venv / f"lib/python{native.python}/site-packages"
    compiled = {p.parent.parent / (p.name.split(".")[0] + ".py") for p in files
                if p.suffix == ".pyc"}  # fmt: skip
    # Every gatewayd module and what `gatewayd run` imports has bytecode.
    gatewayd_sources = set((site / "gatewayd").rglob("*.py"))
    assert gatewayd_sources <= compiled, sorted(map(str, gatewayd_sources - compiled))[:5]
    for library in ("pydantic/main.py", "structlog/_config.py", "paho/mqtt/client.py",
                    "pymodbus/client/tcp.py", "yaml/__init__.py"):  # fmt: skip
        assert site / library in compiled, library
    total = sum(p.stat().st_size for p in root.rglob("*") if not p.is_symlink())
    print(f"installed with bytecode: {total / 1e6:.1f} MB in {len(files)} files")
    assert total < MAX_INSTALLED_BYTES


def test_extracted_gatewayd_checks_the_shipped_config(extracted: Path) -> None:
    """The scratch-installed `gatewayd check` accepts the shipped example and masks secrets."""
    config = extracted / "etc/gatewayd/gatewayd.yaml"
    result = subprocess.run(
        [str(extracted / "usr/bin/gatewayd"), "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # nothing from the dev venv
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["spool"]["path"] == "/var/lib/gatewayd/spool.db"
    assert resolved["gateway"]["device_secret"] == "***"
    assert {device["name"] for device in resolved["devices"]} >= {"meter-1", "inverter-1"}
    assert "demo-gateway-secret" not in result.stdout


def test_extracted_gatewayd_rejects_a_broken_config(extracted: Path, tmp_path: Path) -> None:
    """A bad config exits 78 (EX_CONFIG) with the error on stderr."""
    broken = tmp_path / "gatewayd.yaml"
    text = (extracted / "etc/gatewayd/gatewayd.yaml").read_text()
    broken.write_text(text.replace("models_dir: models", "models_dir: models\nbogus_key: 1"))
    shutil.copytree(extracted / "etc/gatewayd/models", tmp_path / "models")
    result = subprocess.run(
        [str(extracted / "usr/bin/gatewayd"), "check", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == os.EX_CONFIG
    assert "bogus_key" in result.stderr


@pytest.mark.parametrize("command", ["demo", "emulate"])
def test_extracted_harness_commands_print_the_hint(extracted: Path, command: str) -> None:
    """The package has no harness: `gatewayd demo`/`emulate` say so in one line, exit 69."""
    result = subprocess.run(
        [str(extracted / "usr/bin/gatewayd"), command, "--port", "1"],
        capture_output=True, text=True, check=False, env={"PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == os.EX_UNAVAILABLE
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"gatewayd {command}: needs the simulation harness (gatewayd.sim is not installed): "
        "pip install 'gatewayd[sim]'"
    ]


def test_bundled_venv_is_self_contained_on_system_python(extracted: Path, built: Built) -> None:
    """The venv runs on /usr/bin/python3, imports the daemon isolated, names no build path."""
    venv = extracted / "usr/lib/gatewayd"
    cfg = dict(
        line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if line
    )
    assert cfg["home"] == "/usr/bin"
    assert cfg["include-system-site-packages"] == "false"
    assert os.readlink(venv / "bin/python3") == "/usr/bin/python3"
    # Debian's python3-systemd is a Depends; where this machine has it, the link works.
    systemd = ", systemd.journal, systemd.daemon" if Path(DEBIAN_SYSTEMD).is_dir() else ""
    probe = (
        "import sys, aiomqtt, paho.mqtt, pydantic, pymodbus, serial, structlog, yaml, "
        f"gatewayd.cli, gatewayd.app, gatewayd.daemon_cli{systemd}\n"
        "assert yaml.__with_libyaml__  # the stripped extension module still loads\n"
        "print(sys.prefix)\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    result = subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    prefix, loaded = result.stdout.splitlines()
    assert prefix == str(venv)
    assert not set(loaded.split()) & {*HARNESS_TAIL, "gatewayd.sim"}
    leaked = subprocess.run(
        ["grep", "-rlI", "-F", str(built.workdir), str(extracted)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert leaked.stdout == ""


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_packaging_scripts_are_shellcheck_clean() -> None:
    """build-deb.sh and the maintainer scripts pass shellcheck."""
    scripts = [BUILD, *sorted((REPO / "packaging" / "debian").iterdir())]
    result = subprocess.run(
        ["shellcheck", *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
