"""Malformed URLs that make ``urllib`` raise (an unbalanced ``[``, a bad port) get each input's
own clear error, never an internal error: every place that splits a URL from outside."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hardened_launcher.audit.s3export import parse_s3_url
from hardened_launcher.controlplane.settings import load_controlplane_config
from hardened_launcher.egress.policy import endpoint_host_port
from hardened_launcher.errors import LauncherError
from hardened_launcher.executor.errors import RunSpecError
from hardened_launcher.executor.source import parse_source
from hardened_launcher.settings import SettingsError, load_settings
from hardened_launcher.transport.poll_client import Proxy
from hardened_launcher.urls import split_url

#: Each makes ``urllib.parse.urlsplit`` raise ValueError (Python 3.11).
MALFORMED = ["https://[x", "https://[::1", "https://vcs]/repo", "https://a[b]/", "https://["]


@given(st.text(max_size=60))
def test_split_url_never_raises(text: str) -> None:
    split_url(text)


@pytest.mark.parametrize("url", MALFORMED)
@pytest.mark.parametrize(
    "variables",
    [
        lambda url: {"SPACELIFT_WORKER_COMMS_URL": url},
        lambda url: {
            "SPACELIFT_PRIVATEVCS_MAPPING_NAME_0": "vcs",
            "SPACELIFT_PRIVATEVCS_MAPPING_BASE_ENDPOINT_0": url,
        },
    ],
    ids=["comms_url", "private_vcs_endpoint"],
)
def test_launcher_settings_name_the_variable(url: str, variables: object) -> None:
    environ = variables(url)  # type: ignore[operator]
    with pytest.raises(SettingsError) as caught:
        load_settings(environ)
    assert any(name in caught.value.message for name in environ)


@pytest.mark.parametrize("url", MALFORMED)
def test_control_plane_storage_endpoint(url: str) -> None:
    with pytest.raises(LauncherError) as caught:
        load_controlplane_config({"HL_CP_S3_BUCKET": "logs", "HL_CP_S3_ENDPOINT_URL": url})
    assert "HL_CP_S3_ENDPOINT_URL" in caught.value.message


@pytest.mark.parametrize("url", ["s3://[x/y", "s3://bucket]/p", "s3://[::1/p"])
def test_audit_export_destination(url: str) -> None:
    with pytest.raises(LauncherError) as caught:
        parse_s3_url(url)
    assert caught.value.reason == "audit_export_destination_invalid"


@pytest.mark.parametrize("url", MALFORMED)
def test_https_proxy(url: str) -> None:
    proxy = url.replace("https://", "http://", 1)
    with pytest.raises(LauncherError) as caught:
        Proxy.for_url("https://cp.test", environ={"HTTPS_PROXY": proxy})
    assert caught.value.reason == "proxy_invalid"


@pytest.mark.parametrize("url", MALFORMED)
def test_egress_endpoint_is_a_value_error(url: str) -> None:
    with pytest.raises(ValueError, match=r"well-formed|host|port"):
        endpoint_host_port(url)


@pytest.mark.parametrize("url", [*MALFORMED, "private://[x]/r.git"])
def test_run_source_url(url: str) -> None:
    with pytest.raises(RunSpecError):
        parse_source({"url": url, "ref": "main", "commit_sha": "a" * 40})
