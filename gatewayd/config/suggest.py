""" "Did you mean" hints for near-miss names (keys, bus names, models, points)."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def closest(word: str, candidates: Iterable[str]) -> str | None:
    """The candidate `word` was most likely meant to be, or None when nothing is close."""
    options = [c for c in candidates if c != word]
    matches = difflib.get_close_matches(word, options, n=1, cutoff=0.6)
    if matches:
        return matches[0]
    # Case slips ('Input' for 'input') are below difflib's cutoff for short words.
    lowered = {c.lower(): c for c in options}
    return lowered.get(word.lower())


def did_you_mean(word: str, candidates: Iterable[str]) -> str | None:
    """`did you mean 'x'?` for the closest candidate, or None."""
    match = closest(word, candidates)
    return None if match is None else f"did you mean '{match}'?"


def hint_for(word: str, candidates: Iterable[str], *, known: str = "known") -> str | None:
    """A did-you-mean hint, or else the list of what is known (None when nothing is)."""
    names = sorted(set(candidates))
    hint = did_you_mean(word, names)
    if hint is not None:
        return hint
    if not names:
        return None
    return f"{known}: " + ", ".join(names)
