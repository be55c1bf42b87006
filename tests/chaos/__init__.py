"""Chaos suite (`make chaos`): faults injected into real parts; counts of offered, delivered,
duplicated and lost samples per scenario. Run with `python -m tests.chaos`; not collected by
pytest."""
