"""ProbeBudget: timeouts of failing devices take a bounded share of the bus."""

from __future__ import annotations

import pytest

from gatewayd.modbus.probebudget import ProbeBudget


def test_full_budget_allows_a_probe_and_a_timeout_empties_it() -> None:
    """One timeout of the capacity's length spends the whole budget."""
    budget = ProbeBudget(capacity=1.0, now=0.0)
    assert budget.allows_probe(1.0, 0.0)
    budget.charge(1.0, now=1.0)
    assert budget.seconds(1.0) == pytest.approx(0.0)
    assert not budget.allows_probe(1.0, 1.0)


def test_refills_at_the_share_of_elapsed_time_up_to_capacity() -> None:
    """After a 1 s timeout at 5 %, the next probe is allowed just after 20 s, never sooner."""
    budget = ProbeBudget(capacity=1.0, now=0.0, share=0.05)
    budget.charge(1.0, now=0.0)
    assert not budget.allows_probe(1.0, 19.99)
    assert budget.allows_probe(1.0, 20.01)
    assert budget.seconds(1000.0) == pytest.approx(1.0)  # capped


def test_long_run_timeout_time_is_bounded_by_the_share() -> None:
    """Probing whenever allowed, timeouts take at most share x time + capacity."""
    budget = ProbeBudget(capacity=0.5, now=0.0, share=0.05)
    spent = 0.0
    now = 0.0
    while now < 600.0:
        if budget.allows_probe(0.5, now):
            budget.charge(0.5, now + 0.5)
            spent += 0.5
            now += 0.5
        now += 0.1
    assert spent <= 0.05 * 600.0 + 0.5 + 0.5
    assert spent >= 0.9 * 0.05 * 600.0  # and the budget is actually used


def test_a_probe_longer_than_the_capacity_waits_for_a_full_budget() -> None:
    """A device timeout above the capacity needs the full budget, not an impossible amount."""
    budget = ProbeBudget(capacity=1.0, now=0.0)
    assert budget.allows_probe(3.0, 0.0)
    budget.charge(3.0, now=3.0)  # a debt of 2 s: paid back after 60 s at 5 %
    assert not budget.allows_probe(3.0, 62.9)
    assert budget.allows_probe(3.0, 63.1)


def test_rejects_nonsense_parameters() -> None:
    """A zero capacity or a share outside (0, 1] is a programming error."""
    with pytest.raises(ValueError, match="capacity must be"):
        ProbeBudget(capacity=0.0, now=0.0)
    with pytest.raises(ValueError, match="capacity must be"):
        ProbeBudget(capacity=1.0, now=0.0, share=0.0)
