"""Run a benchmark by name: `python -m tests.bench NAME [ARGS...]` (same as tests.bench.NAME)."""

from __future__ import annotations

import pkgutil
import runpy
import sys
from pathlib import Path

if __name__ == "__main__":
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if not m.name.startswith("_")
    )
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        print(f"usage: python -m tests.bench NAME [ARGS...]; NAME is one of: {', '.join(names)}")
        raise SystemExit(2)
    name = sys.argv.pop(1)
    sys.argv[0] = f"tests.bench.{name}"
    runpy.run_module(f"tests.bench.{name}", run_name="__main__", alter_sys=True)
