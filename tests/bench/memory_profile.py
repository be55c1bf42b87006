"""Where the daemon's memory goes: RSS by stage and the top Python allocators, per site.

    python -m tests.bench memory_profile [--site idle,b1,b2] [--seconds 20] [--top 20]

For each site, `gatewayd`'s `Daemon` (as `gatewayd run` runs it, harness dependencies
hidden as on a box: tests/bench/box.py) runs in a child process twice:

- untraced, for the RSS figures (VmRSS from /proc/self/status) at each stage: interpreter
  up, imports done, config loaded, daemon ready (pollers built, spool open), and after
  `--seconds` of polling and delivering;
- traced (`tracemalloc`, started after the imports), for the attribution: live Python
  allocations after the run grouped by file and by line, and a `gc` referent walk of the
  config tree and of the pollers (what each would free if it were dropped).

Sites: `idle` is the example config (config/gatewayd.yaml: its devices are absent, the
buses retry); `b1` is B1's (50 devices x 100 float32 @ 1 s); `b2` a B2-size config at a
fixed rate (200 devices x 1000 float32 @ 5 s: 200 k configured points, 40 k points/s);
`b2-200k` the same at 1 s (B2's 200 k points/s step: best run untraced, `--rss-only`). The
devices of b1/b2 are `fast_responder` processes, the cloud the EnOS emulator in this
process. tracemalloc slows the traced run: its figures attribute memory, the untraced
run's RSS is the one to quote.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import shutil
import subprocess
import sys
import tempfile
import time
import tracemalloc
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

#: name → (devices, float32 points per device, poll interval); None: the example config.
SITES: dict[str, tuple[int, int, str] | None] = {
    "idle": None,
    "b1": (50, 100, "1s"),
    "b2": (200, 1000, "5s"),
    "b2-200k": (200, 1000, "1s"),
}


def rss_mib() -> float:
    """This process's VmRSS in MiB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def deep_size(root: object) -> tuple[int, int]:
    """(bytes, objects) reachable from `root` through `gc` referents, classes, modules and
    functions excluded (they are shared code, not data a drop would free)."""
    seen: set[int] = set()
    todo = [root]
    size = count = 0
    skip = (type, types.ModuleType, types.FunctionType, types.BuiltinFunctionType)
    while todo:
        obj = todo.pop()
        if id(obj) in seen or isinstance(obj, skip):
            continue
        seen.add(id(obj))
        size += sys.getsizeof(obj)
        count += 1
        todo.extend(gc.get_referents(obj))
        if isinstance(obj, dict):  # gc does not visit a dict's keys when all are str
            todo.extend(obj.keys())
    return size, count


# ---------------------------------------------------------------------------- child


async def child(config_path: Path, seconds: float, top: int, trace: bool) -> dict[str, Any]:
    """Run the daemon for `seconds`; return the stages' RSS (and the trace's tops)."""
    from tests.bench.box import as_on_a_box

    stages: dict[str, float] = {"python + asyncio": rss_mib()}
    as_on_a_box()
    from gatewayd.app import Daemon
    from gatewayd.config.loader import load_config
    from gatewayd.systemd import Notifier

    stages["imports"] = rss_mib()
    modules = len(sys.modules)
    if trace:
        tracemalloc.start(1)
    config = load_config(config_path)
    gc.collect()
    stages["config loaded"] = rss_mib()
    daemon = Daemon(config_path, config, notifier=Notifier(environ={}))
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    gc.collect()
    stages["daemon ready"] = rss_mib()
    await asyncio.sleep(seconds)  # the measured run: timing is what is measured
    gc.collect()
    stages[f"after {seconds:g} s"] = rss_mib()
    result: dict[str, Any] = {"stages": stages, "modules": modules}
    if trace:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__)]
        )
        total = sum(s.size for s in snapshot.statistics("filename"))
        result["traced_mib"] = total / 2**20
        for key in ("filename", "lineno"):
            result[f"top_{key}"] = [
                (str(s.traceback[0]), s.size / 2**20, s.count)
                for s in snapshot.statistics(key)[:top]
            ]
        config_size = deep_size(daemon.config)
        poller_size = deep_size(list(daemon.pollers.values()))
        result["walks"] = {
            "config tree (pydantic)": (config_size[0] / 2**20, config_size[1]),
            "pollers (readers, planners, mappings)": (poller_size[0] / 2**20, poller_size[1]),
        }
    daemon.request_stop()
    await task
    return result


# ---------------------------------------------------------------------------- parent


@contextlib.asynccontextmanager
async def site_config(name: str) -> AsyncIterator[Path]:
    """The site's config path, its devices and cloud running for as long as it is used."""
    from gatewayd.config.loader import load_config
    from tests.bench.b1_fleet import FAST_RESPONDER, Cloud, fleet_site
    from tests.support import free_port

    shape = SITES[name]
    if shape is None:
        import yaml

        with tempfile.TemporaryDirectory(prefix="gwmem-") as tmp:
            site = Path(tmp) / "config"
            shutil.copytree("config", site)
            path = site / "gatewayd.yaml"
            data = yaml.safe_load(path.read_text())
            data["gateway"]["broker"]["port"] = free_port()
            data["logging"]["level"] = "warning"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            cloud = Cloud(load_config(path))
            await cloud.start()
            try:
                yield path
            finally:
                await cloud.stop()
        return
    devices, points, interval = shape
    async with fleet_site(devices, points=points, interval=interval,
                          device_side=FAST_RESPONDER) as site:  # fmt: skip
        # The cloud keeps every record it accepted: its memory is not the daemon's.
        records = site.cloud.emulator.records

        async def forget() -> None:
            while True:
                records.clear()
                await asyncio.sleep(1)  # a housekeeping period

        keeper = asyncio.create_task(forget())
        try:
            yield site.config_path
        finally:
            keeper.cancel()


async def run_child(config: Path, seconds: float, top: int, trace: bool) -> dict[str, Any]:
    """One child run; its result is the last line of its stdout."""
    args = [sys.executable, "-m", "tests.bench.memory_profile", "--child", str(config),
            "--seconds", str(seconds), "--top", str(top)]  # fmt: skip
    if trace:
        args.append("--trace")
    proc = await asyncio.create_subprocess_exec(*args, stdout=subprocess.PIPE)
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"profile child exited {proc.returncode}")
    result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return result


def show(name: str, plain: dict[str, Any], traced: dict[str, Any] | None) -> None:
    """Print one site's figures."""
    print(f"\n=== {name}: RSS by stage (untraced run), MiB")
    previous = None
    for stage, mib in plain["stages"].items():
        delta = "" if previous is None else f"  (+{mib - previous:.1f})"
        print(f"  {stage:24s} {mib:7.1f}{delta}")
        previous = mib
    print(f"  modules imported: {plain['modules']}")
    if traced is None:
        return
    print(f"--- traced run: {traced['traced_mib']:.1f} MiB of live Python allocations")
    for label, (mib, count) in traced["walks"].items():
        print(f"  {label:40s} {mib:7.2f} MiB in {count} objects")
    for key in ("filename", "lineno"):
        print(f"--- top allocators by {key} (MiB, blocks)")
        for where, mib, count in traced[f"top_{key}"]:
            print(f"  {mib:7.2f} {count:9d}  {where}")


async def main_async(
    sites: list[str], seconds: float, top: int, rss_only: bool = False
) -> dict[str, Any]:
    """Profile each site; print and return the figures."""
    results: dict[str, Any] = {}
    for name in sites:
        started = time.monotonic()
        async with site_config(name) as config:
            plain = await run_child(config, seconds, top, trace=False)
            traced = None if rss_only else await run_child(config, seconds, top, trace=True)
        show(name, plain, traced)
        print(f"  ({time.monotonic() - started:.0f} s)", flush=True)
        results[name] = {"plain": plain, "traced": traced}
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--site", default="idle,b1,b2", help=f"comma-separated: {list(SITES)}")
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--top", type=int, default=20)
    parser.add_argument("--rss-only", action="store_true", help="skip the traced run")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--trace", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        result = asyncio.run(child(args.child, args.seconds, args.top, args.trace))
        print(json.dumps(result))
        return
    sites = [s.strip() for s in args.site.split(",")]
    unknown = [s for s in sites if s not in SITES]
    if unknown:
        parser.error(f"unknown site(s) {unknown}; known: {list(SITES)}")
    results = asyncio.run(main_async(sites, args.seconds, args.top, args.rss_only))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
