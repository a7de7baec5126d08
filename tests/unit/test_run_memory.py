"""Per-run memory stays bounded: what each run builds in the daemon is freed when it ends.

Found with tracemalloc over real runs (issue 18: the daemon's RSS grew ~27 KiB per run): the
Hyperscan binding kept a reference to every ``ids`` object given to ``Database.compile``, so
each run's redactor (and its prefix database) left hundreds of ints behind. These tests count
the interpreter's live allocations (``sys.getallocatedblocks``) over many fake runs; nothing
is timed.
"""

from __future__ import annotations

import gc
import hashlib
import logging
import sys
import weakref
from collections.abc import Callable

import pytest

from hardened_launcher.redaction import Redactor
from hardened_launcher.redaction.engine import HyperscanEngine
from hardened_launcher.redaction.logging import install, installed_redactor
from hardened_launcher.redaction.prefixes import prefix_index

pytest.importorskip("hyperscan")

RUNS = 20


def growth_per_run(one_run: Callable[[int], None], runs: int = RUNS, warmup: int = 3) -> float:
    """Live allocated blocks added per call of ``one_run``, after a warm-up."""
    for i in range(warmup):  # caches, free lists and lazy imports fill here
        one_run(-1 - i)
    gc.collect()
    before = sys.getallocatedblocks()
    for i in range(runs):
        one_run(i)
    gc.collect()
    return (sys.getallocatedblocks() - before) / runs


def test_compiling_a_hyperscan_engine_leaves_nothing_behind() -> None:
    patterns = [b"pattern-%04d-value" % i for i in range(400)]

    def one_run(_: int) -> None:
        engine = HyperscanEngine(patterns)
        assert engine.find(b"x pattern-0399-value y") == [(2, 20, 399)]  # ids are indexes
        prefix_index(engine)

    # Leaking one id per pattern was 400+ blocks per run; a few blocks are noise.
    assert growth_per_run(one_run) < 20


def test_a_runs_redactor_is_freed_with_the_run() -> None:
    """As the pipeline builds one per run: the launcher's credentials and the run's secrets."""

    # Enough values for over 256 patterns: smaller ints are shared objects, so a leaked id
    # below 257 costs nothing and the test would not see it.
    launcher_values = [
        (f"HL_VALUE_{k}", hashlib.sha256(b"launcher %d" % k).hexdigest() * 2) for k in range(40)
    ]

    def one_run(i: int) -> None:
        redactor = Redactor(engine="hyperscan")
        redactor.add_many([*launcher_values, ("SECRET", f"run-secret-{i}-value")])
        channel = redactor.stream("stdout")
        out = channel.write(f"x run-secret-{i}-value y\n".encode()) + channel.flush()
        assert b"run-secret" not in out
        redactor.close()

    assert growth_per_run(one_run, runs=8) < 20


def test_a_runs_layered_redactor_is_freed_with_the_run() -> None:
    """As the daemon builds them: over the launcher's redactor, compiled once."""
    launcher_values = [
        (f"HL_VALUE_{k}", hashlib.sha256(b"launcher %d" % k).hexdigest() * 2) for k in range(40)
    ]
    shared = Redactor(engine="hyperscan")
    shared.add_many(launcher_values)
    shared_engine = shared._state[0]

    def one_run(i: int) -> None:
        redactor = Redactor(engine="hyperscan", shared=shared)
        redactor.add_many(
            [*launcher_values, *((f"SECRET_{k}", f"run-secret-{i}-{k}-value") for k in range(30))]
        )
        channel = redactor.stream("stdout")
        line = f"x run-secret-{i}-3-value {launcher_values[5][1]} y\n".encode()
        assert channel.write(line) + channel.flush() == b"x *** *** y\n"
        redactor.close()

    assert growth_per_run(one_run, runs=8) < 20
    assert shared._state[0] is shared_engine  # compiled once, used by every run


def test_covers_tells_whether_values_are_masked_already() -> None:
    """``start`` reuses the process redactor for its own log only when it masks every value."""
    token = hashlib.sha256(b"token").hexdigest()
    redactor = Redactor(engine="reference")
    redactor.add_many([("HL_TOKEN", token)])
    assert redactor.covers([("HL_TOKEN", token)])
    assert redactor.covers([])
    assert not redactor.covers([("HL_KEY", token)])  # counted under another name
    assert not redactor.covers([("HL_TOKEN", hashlib.sha256(b"other").hexdigest())])


def test_installed_redactor_is_found_on_the_handlers() -> None:
    logger = logging.getLogger("hl-test-installed-redactor")
    logger.handlers = [logging.NullHandler()]
    assert installed_redactor(logger) is None
    redactor = Redactor(engine="reference")
    install(redactor, logger)
    assert installed_redactor(logger) is redactor


def test_a_runs_engine_is_not_kept_after_its_redactor() -> None:
    """The last-built cache holds engines weakly: a run's secrets' patterns go with the run."""
    redactor = Redactor(engine="reference")
    redactor.add("SECRET", hashlib.sha256(b"run secret").hexdigest())
    engine = weakref.ref(redactor._state[0])
    assert engine() is not None
    del redactor
    gc.collect()
    assert engine() is None
