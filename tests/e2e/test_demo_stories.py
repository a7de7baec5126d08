"""The four stories of ``hardened-launcher demo``, on real components (docs/demo.md)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from hardened_launcher.demo.environment import Environment
from hardened_launcher.demo.stories import (
    Narrator,
    StoryResult,
    masked_secret,
    policy_denied,
    run_story,
    tampered_envelope,
    timed_out,
)

pytestmark = pytest.mark.integration


class _Print:
    def say(self, text: str) -> None:
        print(text)


@pytest.mark.parametrize(
    "story",
    [masked_secret, policy_denied, tampered_envelope, timed_out],
    ids=["masked_secret", "policy_denied", "tampered_envelope", "timeout"],
)
def test_demo_story(
    demo_env: Environment, story: Callable[[Environment, Narrator], StoryResult]
) -> None:
    result = run_story(story, demo_env, _Print())
    assert result.passed, result.problem
