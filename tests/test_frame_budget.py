"""The per-frame audio path does no more work than recorded: a count of function calls for a fixed
10-second call (tests/frame_budget.py), deterministic, so this cannot flake."""

from __future__ import annotations

from tests.frame_budget import MARGIN, budget, measure


async def test_the_frame_path_does_no_more_work_than_its_recorded_budget() -> None:
    counts, allowed = await measure(), budget()
    grown = {part: (calls, allowed.get(part, 0)) for part, calls in counts.items()
             if calls > allowed.get(part, 0) * (1 + MARGIN)}
    assert not grown, (
        "the per-frame path grew by more than {:.0%}: {}. Every call pays this 50 times a second: if the "
        "extra work is worth it, rerun `python -m bench.calls --vendors openai --calls 5,100 --compare main` "
        "to measure what it costs, say so in bench/README.md, and record the new figures with "
        "`python -m tests.frame_budget --write`.".format(
            MARGIN, ", ".join(f"{part} {calls} function calls (budget {budget_calls})"
                              for part, (calls, budget_calls) in grown.items())))


async def test_the_count_is_the_same_every_time() -> None:
    assert await measure() == await measure()
