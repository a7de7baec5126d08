"""The run user's passwd/group entries are added only when missing, keep the image's lines, and
never take a name another id holds; a spec without image takes the launcher's default."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.executor.errors import ImageUnsetError
from hardened_launcher.executor.images import run_image, with_default_image
from hardened_launcher.executor.passwd import add_user_entries
from hardened_launcher.executor.runspec import RunSpec, run_spec_from_mapping
from hardened_launcher.settings import Settings, load_settings

ROOT = "root:x:0:0:root:/root:/bin/sh\n"
ROOT_GROUP = "root:x:0:\n"


def test_missing_entries_are_added_after_the_images_own() -> None:
    added = add_user_entries(ROOT, ROOT_GROUP, uid=1983, gid=1983)
    assert added == (
        ROOT + "spacelift:x:1983:1983:spacelift:/home/spacelift:/bin/sh\n",
        ROOT_GROUP + "spacelift:x:1983:\n",
    )


def test_present_entries_need_no_files() -> None:
    passwd = ROOT + "runner:x:1983:1983::/home/runner:/bin/bash\n"
    assert add_user_entries(passwd, ROOT_GROUP + "runner:x:1983:\n", uid=1983, gid=1983) is None
    # Only the group is missing: both files are mounted, the passwd unchanged.
    both = add_user_entries(passwd, ROOT_GROUP, uid=1983, gid=1983)
    assert both is not None
    assert both[0] == passwd
    assert both[1].endswith("spacelift:x:1983:\n")


def test_a_taken_name_is_not_reused_and_a_missing_newline_is_kept_apart() -> None:
    passwd = "root:x:0:0::/root:/bin/sh\nspacelift:x:1000:1000::/x:/bin/sh"
    added = add_user_entries(passwd, "spacelift:x:1000:", uid=1983, gid=1983)
    assert added is not None
    assert added[0].endswith(
        "/bin/sh\nspacelift-1983:x:1983:1983:spacelift:/home/spacelift:/bin/sh\n"
    )
    assert added[1] == "spacelift:x:1000:\nspacelift-1983:x:1983:\n"


@given(st.text(max_size=400), st.text(max_size=200), st.integers(1, 65535), st.integers(1, 65535))
def test_any_image_files_end_with_exactly_one_entry_for_the_ids(
    passwd: str, group: str, uid: int, gid: int
) -> None:
    added = add_user_entries(passwd, group, uid=uid, gid=gid)
    if added is None:
        return
    new_passwd, new_group = added
    assert new_passwd.startswith(passwd)
    assert new_group.startswith(group)
    for text in (new_passwd, new_group):
        assert text.endswith("\n")
    assert any(line.split(":")[2:3] == [str(uid)] for line in new_passwd.splitlines())
    assert any(line.split(":")[2:3] == [str(gid)] for line in new_group.splitlines())


def spec(**extra: object) -> RunSpec:
    return run_spec_from_mapping(
        {
            "version": 1,
            "run_id": "r1",
            "run_type": "ro",
            "phases": [{"name": "main", "commands": ["true"]}],
            **extra,
        }
    )


def settings(**overrides: str) -> Settings:
    return Settings(state_dir=Path("/s"), cache_dir=Path("/c"), audit_dir=Path("/a"), **overrides)  # type: ignore[arg-type]


def test_the_default_runner_image_fills_a_spec_without_one() -> None:
    bare = spec()
    assert bare.image is None
    filled = with_default_image(bare, settings(default_runner_image="runner:1"))
    assert filled.image == "runner:1"
    named = spec(image="mine:2")
    assert with_default_image(named, settings(default_runner_image="runner:1")) is named
    with pytest.raises(ImageUnsetError, match="SPACELIFT_DEFAULT_RUNNER_IMAGE"):
        run_image(bare, settings())


@pytest.mark.parametrize("value", ["Runner:1", "a b", "-x", "x" * 300, "img;rm", "a\nb"])
def test_a_bad_default_runner_image_is_refused(value: str) -> None:
    from hardened_launcher.errors import ConfigurationError  # noqa: PLC0415

    with pytest.raises(ConfigurationError, match="SPACELIFT_DEFAULT_RUNNER_IMAGE"):
        load_settings({"HOME": "/tmp", "SPACELIFT_DEFAULT_RUNNER_IMAGE": value})


def test_a_good_default_runner_image_is_read() -> None:
    s = load_settings({"HOME": "/tmp", "SPACELIFT_DEFAULT_RUNNER_IMAGE": " registry.example/r:1 "})
    assert s.default_runner_image == "registry.example/r:1"
