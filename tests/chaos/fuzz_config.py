"""Fuzzed configs: mutations of the example site and models must load or fail cleanly.

Every mutant of `config/gatewayd.yaml` or `config/models/*.yaml` (lines deleted,
duplicated, swapped or re-indented; scalars replaced by odd values; bytes inserted or
deleted; tabs; truncation; keys renamed) is loaded in-process with `load_config`. It must
either load, or raise `ConfigError` whose every issue renders as ``file:line:col: ...``
(the file itself unreadable is the only issue allowed without a position). Anything else
is a traceback: counted, and the first few mutants are kept for reproduction. A sample of
mutants also goes through the CLI (`gatewayd check`): exit 0 or 78, no traceback.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import tempfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from tests.bench.common import Report, gatewayd_exe

EXAMPLE = Path("config")
LOCATED = re.compile(r"^[^\n]+:\d+:\d+: ")
ODD_VALUES = [
    "", "0", "-1", "1e309", "nan", "true", "null", "~", "[]", "{}", "[1, 2", "'", '"', "&a",
    "*a", "!!python/object:os.system", "65536", "9" * 40, "1ms", "-5s", "10 parsecs", "0x1F",
    "é", "\u0000", "- a", "a: b: c", "? x", "|", ">", "%TAG", "@", "`", "0o17", "2s2s",
]  # fmt: skip


@dataclass
class FuzzResult:
    """Outcome counts of one fuzz run."""

    loaded: int = 0
    rejected: int = 0
    tracebacks: int = 0
    unlocated: int = 0
    samples: list[dict[str, str]] = field(default_factory=list)


def mutate(text: str, rng: random.Random) -> str:
    """One to three random mutations of a YAML document."""
    for _ in range(rng.randint(1, 3)):
        lines = text.splitlines(keepends=True) or ["\n"]
        i = rng.randrange(len(lines))
        op = rng.randrange(10)
        if op == 0:
            del lines[i]
        elif op == 1:
            lines.insert(i, lines[rng.randrange(len(lines))])
        elif op == 2:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3:
            lines[i] = " " * rng.choice([1, 2, 3, 4, 8]) + lines[i]
        elif op == 4:
            lines[i] = lines[i].lstrip(" ") if rng.random() < 0.5 else "\t" + lines[i]
        elif op == 5 and ":" in lines[i]:
            key, _, _ = lines[i].partition(":")
            lines[i] = f"{key}: {rng.choice(ODD_VALUES)}\n"
        elif op == 6 and ":" in lines[i]:
            key, sep, rest = lines[i].partition(":")
            lines[i] = key.rstrip() + rng.choice(["x", "_", "", "s"]) + sep + rest
        elif op == 7:
            pos = rng.randrange(len(text) + 1)
            return text[:pos] + rng.choice(["", chr(rng.randrange(1, 0x3000))]) + text[pos + 1 :]
        elif op == 8:
            return text[: rng.randrange(len(text) + 1)]
        else:
            lines[i] = lines[i].replace(rng.choice("0123456789 -:"), rng.choice("0123456789 -:"), 1)
        text = "".join(lines)
    return text


def classify(path: Path, result: FuzzResult, mutant: str, target: str) -> None:
    """Load `path` and count the outcome."""
    try:
        load_config(path, environ={})
    except ConfigError as exc:
        result.rejected += 1
        bad = [
            issue.render()
            for issue in exc.issues
            if not LOCATED.match(issue.render()) and issue.line is not None
        ]
        no_position = [i for i in exc.issues if i.line is None and "read" not in i.message]
        if bad or no_position:
            result.unlocated += 1
            if len(result.samples) < 5:
                result.samples.append({"target": target, "mutant": mutant, "error": exc.render()})
    except Exception:
        result.tracebacks += 1
        if len(result.samples) < 5:
            result.samples.append({"target": target, "mutant": mutant,
                                   "traceback": traceback.format_exc()})  # fmt: skip
    else:
        result.loaded += 1


def run(report: Report, quick: bool, count: int = 10_000, cli_count: int = 30) -> None:
    """Fuzz `count` mutants in-process and `cli_count` through `gatewayd check`."""
    rng = random.Random(8)
    result = FuzzResult()
    cli_bad: list[str] = []
    with tempfile.TemporaryDirectory(prefix="gwfuzz-") as tmp:
        site = Path(tmp) / "config"
        shutil.copytree(EXAMPLE, site)
        targets = [site / "gatewayd.yaml", *sorted((site / "models").glob("*.yaml"))]
        originals = {t: t.read_text() for t in targets}
        for n in range(count):
            target = targets[0] if rng.random() < 0.5 else rng.choice(targets[1:])
            mutant = mutate(originals[target], rng)
            target.write_text(mutant, encoding="utf-8", errors="surrogatepass")
            try:
                classify(site / "gatewayd.yaml", result, mutant, target.name)
                if n < cli_count:
                    command = [gatewayd_exe(), "check", str(site / "gatewayd.yaml")]
                    proc = subprocess.run(command, capture_output=True, text=True, timeout=60,
                                          check=False)  # fmt: skip
                    if proc.returncode not in (0, 78) or "Traceback" in proc.stderr:
                        cli_bad.append(f"exit {proc.returncode}: {proc.stderr[-500:]}")
            finally:
                target.write_text(originals[target])
    total = result.loaded + result.rejected + result.tracebacks
    report.details["fuzz_config"] = {**result.__dict__, "cli_bad": cli_bad[:5]}
    report.add("fuzz", "configs fuzzed", total, note=f"{result.loaded} loaded, "
               f"{result.rejected} rejected with errors")  # fmt: skip
    report.add("fuzz", "tracebacks", result.tracebacks, target="0", ok=result.tracebacks == 0)
    report.add("fuzz", "errors without file:line:col", result.unlocated, target="0",
               ok=result.unlocated == 0)  # fmt: skip
    report.add("fuzz", f"CLI check runs ({cli_count}) not 0/78 or traceback", len(cli_bad),
               target="0", ok=not cli_bad)  # fmt: skip
