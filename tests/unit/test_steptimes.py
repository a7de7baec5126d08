"""StepTimes: the durations behind the ``run.timings`` line (benchmarks/bench_pool.py)."""

from __future__ import annotations

import itertools

from hardened_launcher.steptimes import StepTimes


def ticking(*moments: float) -> StepTimes:
    clock = iter(moments)
    return StepTimes(clock=lambda: next(clock))


def test_each_mark_ends_the_step_that_began_at_the_previous_one() -> None:
    timer = ticking(10.0, 10.5, 10.75, 12.0)
    timer.mark("ticket")
    timer.mark("binaries")
    timer.mark("start")
    assert timer.steps == {"ticket": 0.5, "binaries": 0.25, "start": 1.25}
    assert timer.total == 2.0
    assert timer.render() == "ticket=500.0 binaries=250.0 start=1250.0 total=2000.0"


def test_a_step_marked_twice_adds_up_in_its_first_place() -> None:
    timer = ticking(0.0, 1.0, 3.0, 6.0)
    timer.mark("a")
    timer.mark("b")
    timer.mark("a")
    assert timer.steps == {"a": 4.0, "b": 2.0}
    assert timer.render().startswith("a=4000.0 b=2000.0")


def test_names_are_bounded_and_the_total_still_counts_every_mark() -> None:
    counter = itertools.count()
    timer = StepTimes(clock=lambda: float(next(counter)))
    for i in range(StepTimes.MAX_STEPS + 10):
        timer.mark(f"s{i}")
    assert len(timer.steps) == StepTimes.MAX_STEPS
    assert timer.total == StepTimes.MAX_STEPS + 10
