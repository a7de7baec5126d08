"""Gate 5 (execute): the run spec, the hardened container spec (pure) and the Docker runner.

- :mod:`.runspec` — the decrypted run state's shape, validated strictly;
- :mod:`.container_spec` — run spec + settings + proofs → Docker create arguments (pure);
- :mod:`.instructions` — the stdin wire format read by the worker program (pure);
- :mod:`.runner` — create, attach, feed stdin, redact output, enforce timeouts, remove;
- :mod:`.logsink` — where redacted output goes;
- :mod:`.cleanup` — removal of containers left by an earlier life of the launcher;
- :mod:`.entrypoint` — the reference worker program (POSIX sh, run by busybox).
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from hardened_launcher.executor.container_spec import (
        ContainerSpec,
        build_container_spec,
        check_extra_mounts,
    )
    from hardened_launcher.executor.errors import (
        BinaryUnavailableError,
        ContainerRuntimeError,
        DockerUnavailableError,
        ImageMissingError,
        MountRefusedError,
        RunSpecError,
    )
    from hardened_launcher.executor.instructions import (
        encode_instructions,
    )
    from hardened_launcher.executor.logsink import (
        FileLogSink,
        LogSink,
        StreamLogSink,
        TeeLogSink,
    )
    from hardened_launcher.executor.runner import (
        DockerRunner,
        RunResult,
        StopReason,
    )
    from hardened_launcher.executor.runspec import (
        RunSpec,
        parse_run_spec,
        run_spec_from_mapping,
    )

# Exported names resolve on first use (PEP 562), so importing one light submodule (runspec,
# container_spec) does not import the Docker client through runner.
_EXPORTS: dict[str, str] = {
    "ContainerSpec": "hardened_launcher.executor.container_spec",
    "build_container_spec": "hardened_launcher.executor.container_spec",
    "check_extra_mounts": "hardened_launcher.executor.container_spec",
    "BinaryUnavailableError": "hardened_launcher.executor.errors",
    "ContainerRuntimeError": "hardened_launcher.executor.errors",
    "DockerUnavailableError": "hardened_launcher.executor.errors",
    "ImageMissingError": "hardened_launcher.executor.errors",
    "MountRefusedError": "hardened_launcher.executor.errors",
    "RunSpecError": "hardened_launcher.executor.errors",
    "encode_instructions": "hardened_launcher.executor.instructions",
    "FileLogSink": "hardened_launcher.executor.logsink",
    "LogSink": "hardened_launcher.executor.logsink",
    "StreamLogSink": "hardened_launcher.executor.logsink",
    "TeeLogSink": "hardened_launcher.executor.logsink",
    "DockerRunner": "hardened_launcher.executor.runner",
    "RunResult": "hardened_launcher.executor.runner",
    "StopReason": "hardened_launcher.executor.runner",
    "RunSpec": "hardened_launcher.executor.runspec",
    "parse_run_spec": "hardened_launcher.executor.runspec",
    "run_spec_from_mapping": "hardened_launcher.executor.runspec",
}


def __getattr__(name: str) -> Any:  # noqa: ANN401 - any exported object
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib  # noqa: PLC0415

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


__all__ = [
    "BinaryUnavailableError",
    "ContainerRuntimeError",
    "ContainerSpec",
    "DockerRunner",
    "DockerUnavailableError",
    "FileLogSink",
    "ImageMissingError",
    "LogSink",
    "MountRefusedError",
    "RunResult",
    "RunSpec",
    "RunSpecError",
    "StopReason",
    "StreamLogSink",
    "TeeLogSink",
    "build_container_spec",
    "check_extra_mounts",
    "encode_instructions",
    "parse_run_spec",
    "run_spec_from_mapping",
]
