"""Gate 5 (execute): the run spec, the hardened container spec (pure) and the Docker runner.

- :mod:`.runspec` — the decrypted run state's shape, validated strictly;
- :mod:`.container_spec` — run spec + settings + proofs → Docker create arguments (pure);
- :mod:`.instructions` — the stdin wire format read by the worker program (pure);
- :mod:`.runner` — create, attach, feed stdin, redact output, enforce timeouts, remove;
- :mod:`.logsink` — where redacted output goes;
- :mod:`.cleanup` — removal of containers left by an earlier life of the launcher;
- :mod:`.entrypoint` — the reference worker program (POSIX sh, run by busybox).
"""

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
from hardened_launcher.executor.instructions import encode_instructions
from hardened_launcher.executor.logsink import FileLogSink, LogSink, StreamLogSink, TeeLogSink
from hardened_launcher.executor.runner import DockerRunner, RunResult, StopReason
from hardened_launcher.executor.runspec import RunSpec, parse_run_spec, run_spec_from_mapping

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
