"""What the launcher reads back from the Engine API, as typed dictionaries.

Only the fields the launcher uses are named; every one is optional (``total=False``), since a
daemon may omit any of them, and readers use ``.get``. The client checks the top-level shape
(an object, or a list of objects) before it hands one out.
"""

from __future__ import annotations

from typing import Any, TypedDict

__all__ = [
    "ContainerInspect",
    "ContainerState",
    "ContainerSummary",
    "DaemonInfo",
    "DaemonVersion",
    "ImageInspect",
    "IpamConfig",
    "NetworkInspect",
]


class DaemonVersion(TypedDict, total=False):
    Version: str
    ApiVersion: str
    MinAPIVersion: str


class DaemonInfo(TypedDict, total=False):
    ServerVersion: str
    Runtimes: dict[str, Any]


class ContainerSummary(TypedDict, total=False):
    Id: str
    State: str
    Labels: dict[str, str] | None
    Created: int


class ContainerState(TypedDict, total=False):
    Status: str
    Running: bool
    OOMKilled: bool
    ExitCode: int


class ContainerInspect(TypedDict, total=False):
    Id: str
    State: ContainerState


class ImageInspect(TypedDict, total=False):
    Id: str


class IpamConfig(TypedDict, total=False):
    Subnet: str
    Gateway: str


class _Ipam(TypedDict, total=False):
    Config: list[IpamConfig] | None


class NetworkInspect(TypedDict, total=False):
    Id: str
    Name: str
    Driver: str
    Labels: dict[str, str] | None
    Options: dict[str, str] | None
    IPAM: _Ipam
    Containers: dict[str, Any] | None
