"""The OPA oracle, fetched once per session (see ``scripts/fetch-opa-oracle``)."""

from __future__ import annotations

import pytest

from tests.differential.oracle import Opa, fetch_oracle


@pytest.fixture(scope="session")
def opa() -> Opa:
    package_dir = fetch_oracle()
    assert package_dir is not None
    return Opa(package_dir)
