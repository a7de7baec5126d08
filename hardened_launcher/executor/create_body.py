"""The Engine API body of the run container's create call, from a :class:`ContainerSpec`.

:mod:`.container_spec` names each setting once (``create_args`` and ``host_config_args``, in
snake case); this module is the one table from those names to the Engine API's fields. A name
not in the table is a programming error (``ValueError``), never silently dropped: a hardening
setting that did not reach Docker would be a hole.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["create_body"]

_CONFIG_FIELDS: Final = {
    "image": "Image",
    "entrypoint": "Entrypoint",
    "command": "Cmd",
    "user": "User",
    "working_dir": "WorkingDir",
    "hostname": "Hostname",
    "labels": "Labels",
    "tty": "Tty",
    "network_disabled": "NetworkDisabled",
}
_HOST_CONFIG_FIELDS: Final = {
    "mounts": "Mounts",
    "tmpfs": "Tmpfs",
    "read_only": "ReadonlyRootfs",
    "cap_drop": "CapDrop",
    "security_opt": "SecurityOpt",
    "privileged": "Privileged",
    "pids_limit": "PidsLimit",
    "mem_limit": "Memory",
    "memswap_limit": "MemorySwap",
    "nano_cpus": "NanoCpus",
    "ipc_mode": "IpcMode",
    "init": "Init",
    "log_config": "LogConfig",
    "network_mode": "NetworkMode",
    "ulimits": "Ulimits",
    "oom_kill_disable": "OomKillDisable",
    "dns": "Dns",
    "dns_search": "DnsSearch",
    "dns_opt": "DnsOptions",
    "runtime": "Runtime",
}


def create_body(
    create_args: Mapping[str, Any], host_config_args: Mapping[str, Any]
) -> dict[str, Any]:
    """The ``POST /containers/create`` body. ``stdin_open`` with ``detach`` false attaches all
    three streams and closes the container's stdin when the launcher half-closes it."""
    body: dict[str, Any] = {}
    for name, value in create_args.items():
        if name == "environment":
            body["Env"] = [f"{key}={item}" for key, item in dict(value).items()]
        elif name in ("stdin_open", "detach"):
            continue
        elif name in _CONFIG_FIELDS:
            body[_CONFIG_FIELDS[name]] = value
        else:
            raise ValueError(f"create argument {name!r} has no Engine API field here")
    attached = not create_args.get("detach", False)
    stdin = bool(create_args.get("stdin_open", False))
    body.update(
        {
            "OpenStdin": stdin,
            "StdinOnce": attached and stdin,
            "AttachStdin": attached and stdin,
            "AttachStdout": attached,
            "AttachStderr": attached,
        }
    )
    host_config: dict[str, Any] = {}
    for name, value in host_config_args.items():
        if name not in _HOST_CONFIG_FIELDS:
            raise ValueError(f"host config argument {name!r} has no Engine API field here")
        host_config[_HOST_CONFIG_FIELDS[name]] = list(value) if name == "mounts" else value
    body["HostConfig"] = host_config
    return body
