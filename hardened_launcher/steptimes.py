"""Where the start of one run goes: monotonic durations of its named steps, logged once.

The daemon makes one :class:`StepTimes` when it launches a run; the run's thread, the pipeline
and the Docker runner mark each step as it ends (``mark("binaries")``), and the pipeline logs
``run.timings run_id=… launch=0.4 ticket=1.2 … start=310.5 total=402.0`` (milliseconds) as
soon as the container started. Step names and durations only: nothing of the run itself.
``benchmarks/bench_pool.py`` reads these lines to split submit → container start.
"""

from __future__ import annotations

import time
from collections.abc import Callable

__all__ = ["StepTimes"]


class StepTimes:
    """Durations of consecutive steps of one run (one thread marks them, in order).

    Each :meth:`mark` closes the step that began at the previous mark (or at construction); a
    step marked twice adds up. Bounded: at most :data:`MAX_STEPS` names are kept.
    """

    MAX_STEPS = 32

    def __init__(self, *, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self._began = self._last = clock()
        self._steps: dict[str, float] = {}

    def mark(self, step: str) -> None:
        """End ``step`` now (it began at the previous mark)."""
        now = self._clock()
        if step in self._steps or len(self._steps) < self.MAX_STEPS:
            self._steps[step] = self._steps.get(step, 0.0) + (now - self._last)
        self._last = now

    @property
    def steps(self) -> dict[str, float]:
        """Seconds per step, in the order they were first marked."""
        return dict(self._steps)

    @property
    def total(self) -> float:
        """Seconds from construction to the last mark."""
        return self._last - self._began

    def render(self) -> str:
        """``name=ms … total=ms`` (milliseconds, one decimal)."""
        parts = [f"{name}={seconds * 1000:.1f}" for name, seconds in self._steps.items()]
        parts.append(f"total={self.total * 1000:.1f}")
        return " ".join(parts)
