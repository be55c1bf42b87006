#!/bin/bash
# Build gatewayd .deb packages with plain dpkg-deb (no debhelper), for any Debian release and
# architecture below, on any amd64 or arm64 build machine (no emulation, no compiler).
#
# Usage: packaging/build-deb.sh [OUTDIR [TARGET...]]     (default: dist, every target)
#   TARGET  bookworm-amd64 | bookworm-arm64 | trixie-amd64 | trixie-arm64
#           (Debian 12 ships Python 3.11, Debian 13 Python 3.13)
# Env:   PIP_PYTHON  interpreter whose pip fetches the wheels (default: .venv/bin/python if
#                    present, else /usr/bin/python3)
#        WORKDIR     staging area (default: build/deb)
#
# Writes OUTDIR/gatewayd_<version>+deb<N>_<arch>.deb per target, and prints each path.
#
# Layout of a package:
#   /usr/lib/gatewayd/                a venv on the box's /usr/bin/python3: gatewayd (without
#                                     its simulation harness, gatewayd.sim) and every
#                                     dependency, as wheels built for the target's CPython and
#                                     CPU; systemd-python is Debian's python3-systemd (a
#                                     symlink into /usr/lib/python3/dist-packages)
#   /usr/bin/gatewayd                 wrapper: exec <its dir>/../lib/gatewayd/bin/python -I -m
#                                     gatewayd, so an extracted tree (dpkg -x) runs as well
#   /lib/systemd/system/gatewayd.service, /usr/lib/sysusers.d/, /usr/lib/tmpfiles.d/
#   /etc/gatewayd/gatewayd.yaml, /etc/gatewayd/models/*.yaml   conffiles (the example site,
#                                     spool moved to /var/lib/gatewayd)
#
# Every wheel is downloaded (or taken from pip's cache) HERE, at build time, with pip's
# --platform/--python-version/--only-binary=:all:, so nothing is compiled for the wrong CPU;
# installing a .deb needs no network and runs no pip. The venv is bound to its Python minor,
# hence Depends: python3 (>= 3.X), python3 (<< 3.X+1). Bytecode is compiled on the box by
# postinst (the build machine may not have the target's Python) and removed by prerm.
set -euo pipefail
# dpkg-deb wants 0755 directories in the package, whatever umask the builder has.
umask 022

repo=$(cd "$(dirname "$0")/.." && pwd)
outdir=$(realpath -m "${1:-$repo/dist}")
shift || true
targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
    targets=(bookworm-amd64 bookworm-arm64 trixie-amd64 trixie-arm64)
fi
workdir=$(realpath -m "${WORKDIR:-$repo/build/deb}")
if [[ -z "${PIP_PYTHON:-}" ]]; then
    if [[ -x "$repo/.venv/bin/python" ]]; then PIP_PYTHON=$repo/.venv/bin/python
    else PIP_PYTHON=/usr/bin/python3; fi
fi

prefix=/usr/lib/gatewayd
# Debian's python3-systemd: the journal and sd_notify bindings, built against the box's
# libsystemd (systemd-python has no wheels; compiling it for another CPU needs a cross
# toolchain). The daemon runs without it too (plain NOTIFY_SOCKET datagrams, stderr logs).
debian_systemd=/usr/lib/python3/dist-packages/systemd
version=$("$PIP_PYTHON" -c 'import sys, tomllib; print(tomllib.load(open(sys.argv[1], "rb"))["project"]["version"])' "$repo/pyproject.toml")

mkdir -p "$workdir" "$outdir"

# 1. Shared by every target: the gatewayd wheel (pure Python) and the versions to ship.
wheelhouse=$workdir/wheelhouse
rm -rf "$wheelhouse"
# From a copy of the files git tracks: setuptools reuses a checkout's build/lib, and a
# stale one put modules that no longer exist (a moved gatewayd/demo) into the wheel.
source=$workdir/source
rm -rf "$source" && mkdir -p "$source"
if git -C "$repo" rev-parse --git-dir >/dev/null 2>&1; then
    while IFS= read -r -d '' file; do  # tracked or new, and not deleted in the work tree
        if [[ -e "$repo/$file" ]]; then (cd "$repo" && cp --parents -- "$file" "$source"); fi
    done < <(git -C "$repo" ls-files -z --cached --others --exclude-standard)
else  # an unpacked source tarball: everything but the build output
    (cd "$repo" && tar --exclude=./build --exclude=./dist --exclude=./.venv -cf - .) \
        | tar -C "$source" -xf -
fi
"$PIP_PYTHON" -m pip wheel --quiet --no-deps --disable-pip-version-check -w "$wheelhouse" "$source"
wheel=$(echo "$wheelhouse"/gatewayd-*.whl)
constraints=$workdir/constraints.txt
# Ship the versions the test suite ran against (the dev venv's), minus gatewayd itself.
"$PIP_PYTHON" -m pip freeze --exclude-editable --disable-pip-version-check \
    | grep -v -i -E '^(gatewayd|-e )|@ file:' > "$constraints" || true

# manylinux platform tags a glibc 2.<minor> box runs, for pip's --platform (pip does not
# widen a manylinux_2_X tag to older ones by itself).
platforms() {  # machine glibc_minor
    local machine=$1 minor=$2 m
    echo "--platform manylinux1_$machine --platform manylinux2010_$machine"
    echo "--platform manylinux2014_$machine"
    for ((m = 5; m <= minor; m++)); do echo "--platform manylinux_2_${m}_$machine"; done
}

strip_tool() {  # machine: a strip that handles that CPU's ELF files
    local tool
    for tool in "$1-linux-gnu-strip" llvm-strip; do
        if command -v "$tool" >/dev/null; then echo "$tool"; return 0; fi
    done
    if [[ $1 == "$(uname -m)" ]] && command -v strip >/dev/null; then echo strip; return 0; fi
    return 1
}

build_target() {  # release-arch
    local target=$1 release=${1%-*} arch=${1#*-} debian python glibc machine
    case $release in
        bookworm) debian=12 python=3.11 glibc=36 ;;
        trixie)   debian=13 python=3.13 glibc=41 ;;
        *) echo "error: unknown Debian release in target '$target'" >&2; return 2 ;;
    esac
    case $arch in
        amd64) machine=x86_64 ;;
        arm64) machine=aarch64 ;;
        *) echo "error: unknown architecture in target '$target'" >&2; return 2 ;;
    esac
    local abi=cp${python/./} next_minor=${python%.*}.$((${python#*.} + 1))
    local name=gatewayd_${version}+deb${debian}_${arch}
    local stage=$workdir/$name
    local venv=$stage$prefix
    local site=$venv/lib/python$python/site-packages
    echo "building $name.deb: Debian $debian, Python $python, $machine" >&2
    rm -rf "$stage"
    mkdir -p "$stage/DEBIAN" "$venv/bin" "$site"

    # 2. The venv by hand: the box's python3 and a pyvenv.cfg, as `python -m venv` makes them
    # there (it cannot be run here for another Python).
    ln -s /usr/bin/python3 "$venv/bin/python3"
    ln -s python3 "$venv/bin/python"
    ln -s python3 "$venv/bin/python$python"
    printf 'home = /usr/bin\ninclude-system-site-packages = false\nversion = %s\n' \
        "$python" > "$venv/pyvenv.cfg"
    # shellcheck disable=SC2046 # one word per option
    "$PIP_PYTHON" -m pip install --quiet --no-compile --disable-pip-version-check \
        --no-warn-script-location --target "$site" \
        --only-binary=:all: --implementation cp --python-version "$python" --abi "$abi" \
        $(platforms "$machine" "$glibc") --constraint "$constraints" "$wheel"
    # Console scripts name the build's pip interpreter; the package's wrapper is /usr/bin.
    rm -rf "${site:?}/bin"
    # The harness (gatewayd.sim) is for development and tests, never for a box.
    rm -rf "${site:?}/gatewayd/sim"
    # direct_url.json names the wheel's build path; a box has no use for it.
    rm -f "$site"/gatewayd-*.dist-info/direct_url.json
    sed -i -e '/^gatewayd\/sim\//d' -e '/\.dist-info\/direct_url\.json,/d' \
        "$site"/gatewayd-*.dist-info/RECORD
    ln -s "$debian_systemd" "$site/systemd"
    # Wheels may keep debug info (PyYAML's _yaml: 2.8 MB, 0.4 MB without); the box does not
    # need it. Stripped with a tool that knows the target's CPU.
    local strip
    if strip=$(strip_tool "$machine"); then
        find "$site" -name '*.so' -type f -exec "$strip" --strip-debug {} +
    else
        echo "warning: no strip tool for $machine (binutils-aarch64-linux-gnu, binutils-x86-64-linux-gnu or llvm):" \
             "extension modules keep their debug info" >&2
    fi
    if grep -rqI -F "$workdir" "$venv"; then
        echo "error: a build path is left in the venv:" >&2
        grep -rlI -F "$workdir" "$venv" >&2
        return 1
    fi

    # 3. Entry point, unit, users, directories, example config, docs.
    mkdir -p "$stage/usr/bin"
    cat > "$stage/usr/bin/gatewayd" <<'EOF'
#!/bin/sh
# gatewayd lives in its own venv; -I keeps PYTHONPATH and user site-packages out of it.
here=$(dirname "$(readlink -f "$0")")
exec "$here/../lib/gatewayd/bin/python" -I -m gatewayd "$@"
EOF
    chmod 0755 "$stage/usr/bin/gatewayd"
    install -D -m 0644 "$repo/packaging/gatewayd.service" "$stage/lib/systemd/system/gatewayd.service"
    install -D -m 0644 "$repo/packaging/sysusers.d/gatewayd.conf" "$stage/usr/lib/sysusers.d/gatewayd.conf"
    install -D -m 0644 "$repo/packaging/tmpfiles.d/gatewayd.conf" "$stage/usr/lib/tmpfiles.d/gatewayd.conf"

    install -d -m 0755 "$stage/etc/gatewayd/models"
    # Relative paths in the example resolve next to the config; on a box the spool belongs in
    # the unit's StateDirectory (/etc is read-only to the service).
    sed -e 's|^\(  path: \)state/spool.db|\1/var/lib/gatewayd/spool.db|' \
        "$repo/config/gatewayd.yaml" > "$stage/etc/gatewayd/gatewayd.yaml"
    if ! grep -q '^  path: /var/lib/gatewayd/spool.db' "$stage/etc/gatewayd/gatewayd.yaml"; then
        echo "error: could not point the example's spool.path at /var/lib/gatewayd" >&2
        return 1
    fi
    # It may hold inline secrets: not world-readable (postinst gives it to group gatewayd).
    chmod 0640 "$stage/etc/gatewayd/gatewayd.yaml"
    install -m 0644 "$repo"/config/models/*.yaml "$stage/etc/gatewayd/models/"
    install -D -m 0644 "$repo/README.md" "$stage/usr/share/doc/gatewayd/README.md"

    # 4. Control files.
    (cd "$stage" && find etc -type f | sort | sed 's|^|/|') > "$stage/DEBIAN/conffiles"
    local installed_size
    installed_size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
    cat > "$stage/DEBIAN/control" <<EOF
Package: gatewayd
Version: $version+deb$debian
Architecture: $arch
Maintainer: gatewayd maintainers <gatewayd@localhost>
Installed-Size: $installed_size
Depends: python3 (>= $python), python3 (<< $next_minor), python3-systemd, systemd
Section: net
Priority: optional
Homepage: file:///usr/share/doc/gatewayd/README.md
Description: Modbus TCP/RTU edge gateway to Envision EnOS with a store-and-forward spool
 gatewayd polls Modbus TCP, RTU (RS-485) and RTU-over-TCP devices, maps registers to EnOS
 measurepoints and events through YAML device models, commits every sample to a local
 SQLite spool and delivers it over one gateway MQTT connection, backfilling after outages.
 .
 Built for Debian $debian (Python $python) on $arch. The daemon and its Python dependencies
 are bundled in /usr/lib/gatewayd; the package installs offline. The service is not started
 on install: edit /etc/gatewayd/gatewayd.yaml, run "gatewayd check
 /etc/gatewayd/gatewayd.yaml", then "systemctl enable --now gatewayd".
EOF
    for script in postinst prerm postrm; do
        install -m 0755 "$repo/packaging/debian/$script" "$stage/DEBIAN/$script"
    done

    # 5. The archive: root-owned files whatever user builds it; gzip keeps the build quick.
    local deb=$outdir/$name.deb
    dpkg-deb --root-owner-group -Zgzip --build "$stage" "$deb" >/dev/null
    echo "$deb"
}

for target in "${targets[@]}"; do
    build_target "$target"
done
