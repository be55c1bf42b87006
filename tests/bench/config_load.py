"""Benchmark: `load_config` on the example site against plain libyaml parsing of its files.

Run: `python -m tests.bench.config_load`. Prints the cost of strict loading (line
tracking, validation, cross-checks) as a multiple of just parsing the same YAML with
PyYAML's C loader, both measured in this run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import yaml

from gatewayd.config.loader import load_config

ROOT = Path(__file__).resolve().parents[2] / "config"
FILES = [ROOT / "gatewayd.yaml", *sorted((ROOT / "models").glob("*.yaml"))]


def _best_of(func: Callable[[], object], rounds: int = 7, repeat: int = 20) -> float:
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(repeat):
            func()
        best = min(best, (time.perf_counter() - start) / repeat)
    return best


def _plain_parse() -> None:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    for file in FILES:
        yaml.load(file.read_text(encoding="utf-8"), Loader=loader)


def main() -> None:
    """Print the ratio strict-load / plain-parse."""
    baseline = _best_of(_plain_parse)
    strict = _best_of(lambda: load_config(ROOT / "gatewayd.yaml", environ={}))
    print(f"config files: {len(FILES)}")
    print(f"load_config / plain yaml.load (libyaml): {strict / baseline:.1f}x")


if __name__ == "__main__":
    main()
