"""The control plane's state directory: CA, run-state signing key, broker files, store.

``init`` creates, in a new 0700 directory, files that are all 0600::

    ca.key  ca.pem                  the pool CA (EC P-384)
    signing.key                     Ed25519 key that signs sealed run states (public half in tokens)
    controlplane.key controlplane.pem   the control plane's MQTT client certificate
    controlplane.json               URLs and broker listener (no secrets)
    store.sqlite3                   the SQLite store
    broker/                         mosquitto.conf, acl, ca.pem, server.pem/.key, crl.pem

Opening the directory refuses one that group or others can read or write, like ssh does.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import ssl
import stat
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from hardened_launcher.bounded_input import describe_path, read_bounded
from hardened_launcher.controlplane.errors import ControlPlaneConfigurationError
from hardened_launcher.controlplane.store import Store
from hardened_launcher.directory_lock import DirectoryLock
from hardened_launcher.identity.issuing import (
    CertificateAuthority,
    issue_control_plane_certificate,
)
from hardened_launcher.identity.keyfiles import write_private_file
from hardened_launcher.identity.token import (
    DEFAULT_MQTT_NAMESPACE,
    MQTT_NAMESPACE_PATTERN,
    TokenError,
    check_token_urls,
)
from hardened_launcher.secrets import Secret, wipe_bytearray
from hardened_launcher.transport.broker_config import (
    RevokedCertificate,
    write_broker_config,
    write_revocation_list,
)

if TYPE_CHECKING:  # the MQTT client (paho) loads only where a transport is made
    from hardened_launcher.transport.tls import TlsCredentials

CA_KEY_FILE: Final = "ca.key"
CA_CERT_FILE: Final = "ca.pem"
SIGNING_KEY_FILE: Final = "signing.key"
CLIENT_KEY_FILE: Final = "controlplane.key"
CLIENT_CERT_FILE: Final = "controlplane.pem"
SETTINGS_FILE: Final = "controlplane.json"
STORE_FILE: Final = "store.sqlite3"
BROKER_DIR: Final = "broker"
#: mosquitto's pid, written by whoever starts it (``pool reset`` sends it SIGHUP).
BROKER_PID_FILE: Final = "mosquitto.pid"
BROKER_PID_VARIABLE: Final = "HL_CP_BROKER_PID_FILE"
DIRECTORY_MODE: Final = 0o700
CLIENT_CERT_VALIDITY: Final = timedelta(days=365)
MAX_PID_FILE_BYTES: Final = 64
MAX_STATE_FILE_BYTES: Final = 1024 * 1024

_REQUIRED_FILES: Final = (
    CA_KEY_FILE,
    CA_CERT_FILE,
    SIGNING_KEY_FILE,
    CLIENT_KEY_FILE,
    CLIENT_CERT_FILE,
    SETTINGS_FILE,
    STORE_FILE,
)


def _bad_state(message: str, *, hint: str, reason: str = "state_dir_invalid") -> Exception:
    return ControlPlaneConfigurationError(message, hint=hint, reason=reason)


@dataclass(frozen=True, kw_only=True)
class ControlPlaneSettings:
    """What ``init`` was told: defaults for tokens and the broker listener. No secrets."""

    broker_url: str
    control_plane_url: str
    namespace: str = DEFAULT_MQTT_NAMESPACE
    broker_host: str = "127.0.0.1"
    broker_port: int = 8883
    #: ``poll`` (HTTPS long polling served by ``serve`` itself) or ``mqtt`` (through mosquitto).
    #: A state directory from before the poll transport has no such key: ``mqtt``.
    protocol: str = "poll"
    poll_host: str = "127.0.0.1"
    poll_port: int = 8443

    def __post_init__(self) -> None:
        if self.protocol not in ("poll", "mqtt"):
            raise _bad_state("the protocol is not poll or mqtt", hint="Pass --protocol poll|mqtt")
        if not 1 <= self.poll_port <= 65535:
            raise _bad_state("the poll port is out of range", hint="Pass --poll-port 1-65535")
        if MQTT_NAMESPACE_PATTERN.fullmatch(self.namespace) is None:
            raise _bad_state(
                "the MQTT namespace is not one topic level of [A-Za-z0-9_-]",
                hint="Pass --namespace with letters, digits, _ or -",
            )
        if not 1 <= self.broker_port <= 65535:
            raise _bad_state("the broker port is out of range", hint="Pass --broker-port 1-65535")
        try:
            check_token_urls(broker_url=self.broker_url, control_plane_url=self.control_plane_url)
        except TokenError as exc:
            # Every token issued with these URLs would be refused by the launcher: say so now.
            raise _bad_state(
                exc.message.replace("in the token ", "").replace("the token", "a token"),
                hint="Pass --control-plane-url https://HOST[:PORT] (http:// only to localhost) "
                "and --broker-url mqtts://HOST:PORT",
                reason="url_invalid",
            ) from None

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2, sort_keys=True).encode() + b"\n"

    @classmethod
    def from_json(cls, data: bytes) -> ControlPlaneSettings:
        try:
            doc = json.loads(data)
            return cls(
                broker_url=str(doc["broker_url"]),
                control_plane_url=str(doc["control_plane_url"]),
                namespace=str(doc["namespace"]),
                broker_host=str(doc["broker_host"]),
                broker_port=int(doc["broker_port"]),
                protocol=str(doc.get("protocol", "mqtt")),
                poll_host=str(doc.get("poll_host", "127.0.0.1")),
                poll_port=int(doc.get("poll_port", 8443)),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise _bad_state(
                f"{SETTINGS_FILE} is not a control-plane settings file",
                hint="Restore it, or initialise a new state directory",
            ) from exc


def _state_file(directory: Path, name: str) -> bytearray:
    """One file of the state directory: a regular file of at most 1 MiB, else a state error."""

    def refused(message: str, *, hint: str, reason: str) -> ControlPlaneConfigurationError:
        del hint, reason
        return ControlPlaneConfigurationError(
            message, hint="Restore the state directory from backup", reason="state_dir_invalid"
        )

    return read_bounded(
        directory / name,
        max_bytes=MAX_STATE_FILE_BYTES,
        what="control-plane state file",
        unreadable=refused,
        too_large=refused,
    )


def _check_private(path: Path, *, directory: bool) -> None:
    try:
        info = path.lstat()
    except FileNotFoundError as exc:
        raise _bad_state(
            f"{path} is missing",
            hint="Point --dir at a directory made by `controlplane init`",
            reason="state_dir_incomplete",
        ) from exc
    expected = stat.S_ISDIR(info.st_mode) if directory else stat.S_ISREG(info.st_mode)
    if not expected:
        raise _bad_state(
            f"{path} is not a {'directory' if directory else 'regular file'}",
            hint="Do not replace state files with links or other file types",
        )
    if info.st_mode & 0o077:
        raise _bad_state(
            f"{path} is accessible by group or others (mode {stat.S_IMODE(info.st_mode):04o})",
            hint=f"Run chmod {'0700' if directory else '0600'} {path}",
            reason="state_dir_permissions",
        )
    if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
        raise _bad_state(
            f"{path} is owned by another user",
            hint="Run the control plane as the user that initialised it",
            reason="state_dir_permissions",
        )


@dataclass(frozen=True)
class StateDir:
    """An initialised, permission-checked state directory. Build it with :func:`open_state_dir`."""

    path: Path
    settings: ControlPlaneSettings

    @property
    def store_path(self) -> Path:
        return self.path / STORE_FILE

    @property
    def broker_dir(self) -> Path:
        return self.path / BROKER_DIR

    def open_store(self) -> Store:
        return Store(self.store_path)

    def certificate_authority(self) -> CertificateAuthority:
        key = Secret.from_bytearray(_state_file(self.path, CA_KEY_FILE))
        try:
            return CertificateAuthority.from_pem(
                key_pem=key, certificate_pem=bytes(_state_file(self.path, CA_CERT_FILE))
            )
        finally:
            key.wipe()

    def signing_key(self) -> Ed25519PrivateKey:
        buf = _state_file(self.path, SIGNING_KEY_FILE)
        try:
            key = serialization.load_pem_private_key(bytes(buf), password=None)
        except (ValueError, TypeError) as exc:
            raise _bad_state(
                f"{SIGNING_KEY_FILE} is not a PEM private key", hint="Restore it from backup"
            ) from exc
        finally:
            wipe_bytearray(buf)
        if not isinstance(key, Ed25519PrivateKey):
            raise _bad_state(f"{SIGNING_KEY_FILE} is not an Ed25519 key", hint="Restore it")
        return key

    def tls_credentials(self) -> TlsCredentials:
        """The control plane's MQTT client credentials (``controlplane.pem``/``.key``, CA).

        The caller owns ``private_key_pem`` and wipes it once the transport has loaded it.
        """
        buf = _state_file(self.path, CLIENT_KEY_FILE)
        try:
            from hardened_launcher.transport.tls import TlsCredentials  # noqa: PLC0415

            return TlsCredentials(
                ca_certificate=x509.load_pem_x509_certificate(
                    bytes(_state_file(self.path, CA_CERT_FILE))
                ),
                certificate=x509.load_pem_x509_certificate(
                    bytes(_state_file(self.path, CLIENT_CERT_FILE))
                ),
                private_key_pem=Secret.from_bytearray(buf),
            )
        except ValueError as exc:
            wipe_bytearray(buf)
            raise _bad_state(
                "the control plane's client certificate or CA is not PEM",
                hint="Restore controlplane.pem and ca.pem from backup",
            ) from exc

    def broker_pid(self, explicit: Path | None = None, *, environ: Mapping[str, str]) -> int | None:
        """The running broker's pid, for SIGHUP after a CRL change, or None when unknown.

        Looked up in order: ``explicit`` (``--broker-pid-file``), ``HL_CP_BROKER_PID_FILE``,
        then ``broker/mosquitto.pid`` in the state directory if it exists. Whoever starts
        mosquitto (the operator's service manager, ``demo``) writes its pid there.
        """
        chosen = explicit
        if chosen is None and environ.get(BROKER_PID_VARIABLE):
            chosen = Path(environ[BROKER_PID_VARIABLE])
        if chosen is None:
            default = self.broker_dir / BROKER_PID_FILE
            if not default.exists():
                return None
            chosen = default
        data = read_bounded(chosen, max_bytes=MAX_PID_FILE_BYTES, what="broker pid file")
        try:
            pid = int(bytes(data).decode("ascii").strip())
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad_state(
                f"{describe_path(chosen)} does not hold a process id",
                hint="Point --broker-pid-file / HL_CP_BROKER_PID_FILE at mosquitto's pid file",
                reason="broker_pid_invalid",
            ) from exc
        if pid <= 1:
            raise _bad_state(
                f"{describe_path(chosen)} does not hold a usable process id",
                hint="Point --broker-pid-file / HL_CP_BROKER_PID_FILE at mosquitto's pid file",
                reason="broker_pid_invalid",
            )
        return pid

    def poll_server_tls(self) -> ssl.SSLContext:
        """The long-poll endpoint's TLS: the server certificate and CRL in ``broker/`` (shared
        with mosquitto), client certificates of the pool CA required."""
        tls = self.broker_dir
        try:
            # aiohttp loads only when serve makes its poll endpoint.
            from hardened_launcher.transport.poll_server import server_tls_context  # noqa: PLC0415

            return server_tls_context(
                ca_pem=(self.path / CA_CERT_FILE).read_bytes(),
                cert_file=str(tls / "server.pem"),
                key_file=str(tls / "server.key"),
                crl_file=str(tls / "crl.pem"),
            )
        except (OSError, ssl.SSLError) as exc:
            raise _bad_state(
                "the TLS server files in broker/ cannot be loaded",
                hint="Initialise the state directory without --no-broker (broker/ holds the "
                "server certificate and CRL of both transports)",
            ) from exc

    def update_revocation_list(self, store: Store, *, now: datetime) -> Path | None:
        """Rewrite the broker's CRL from the store's revoked serials (None without a broker dir).

        mosquitto reads it only on start and SIGHUP.
        """
        if not self.broker_dir.is_dir():
            return None
        revoked = [
            RevokedCertificate(
                serial_number=int(r.serial, 16),
                revoked_at=datetime.fromtimestamp(r.revoked_at, UTC),
            )
            for r in store.revoked_certificates()
        ]
        return write_revocation_list(
            self.broker_dir, ca=self.certificate_authority(), revoked=revoked, now=now
        )


def _pem_private(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> Secret:
    return Secret.from_bytearray(
        bytearray(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    )


def init_state_dir(
    path: Path,
    *,
    settings: ControlPlaneSettings,
    now: datetime | None = None,
    with_broker: bool = True,
) -> StateDir:
    """Create a new state directory (it must not exist, or be empty).

    The directory is locked while it is filled (a second ``init`` at the same time is refused,
    not interleaved with this one), and a failed init removes what it wrote, so the directory
    is either a whole control plane or empty.
    """
    start = now or datetime.now(UTC)
    if path.exists() or path.is_symlink():
        _refuse_unless_empty(path)
    else:
        try:
            path.mkdir(mode=DIRECTORY_MODE, parents=True)
        except FileExistsError:
            _refuse_unless_empty(path)  # another init made it just now
    lock = DirectoryLock.acquire(
        path,
        what="the control plane state",
        reason="state_dir_in_use",
        hint="another `controlplane init` or `serve` uses this directory: let it finish, "
        "or choose a new --dir",
    )
    try:
        _refuse_unless_empty(path)  # filled by an init that held the lock before this one
        path.chmod(DIRECTORY_MODE)
        try:
            _fill_state_dir(path, settings=settings, start=start, with_broker=with_broker)
        except BaseException:
            _empty_directory(path)
            raise
        return open_state_dir(path)
    finally:
        lock.release()


def _refuse_unless_empty(path: Path) -> None:
    if not path.is_dir() or path.is_symlink() or any(path.iterdir()):
        raise _bad_state(
            f"{path} exists and is not an empty directory",
            hint="Choose a new --dir; init never overwrites a control plane",
            reason="state_dir_exists",
        )


def _empty_directory(path: Path) -> None:
    """Remove everything in ``path`` (a half-written state directory this process locked).

    Best effort: a failure here must not hide the error that stopped the init.
    """
    with contextlib.suppress(OSError):
        for entry in path.iterdir():
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


def _fill_state_dir(
    path: Path, *, settings: ControlPlaneSettings, start: datetime, with_broker: bool
) -> None:
    ca = CertificateAuthority.generate(not_before=start - timedelta(hours=1))
    with ca.key_to_pem() as ca_key:
        write_private_file(path / CA_KEY_FILE, ca_key, force=False)
    write_private_file(path / CA_CERT_FILE, ca.certificate_pem(), force=False)

    signing = Ed25519PrivateKey.generate()
    with _pem_private(signing) as pem:
        write_private_file(path / SIGNING_KEY_FILE, pem, force=False)

    client_key = ec.generate_private_key(ec.SECP384R1())
    client_cert = issue_control_plane_certificate(
        ca,
        client_key.public_key(),
        not_before=start - timedelta(minutes=5),
        not_after=min(start + CLIENT_CERT_VALIDITY, ca.certificate.not_valid_after_utc),
    )
    with _pem_private(client_key) as pem:
        write_private_file(path / CLIENT_KEY_FILE, pem, force=False)
    write_private_file(
        path / CLIENT_CERT_FILE,
        client_cert.public_bytes(serialization.Encoding.PEM),
        force=False,
    )
    write_private_file(path / SETTINGS_FILE, settings.to_json(), force=False)
    Store(path / STORE_FILE, create=True).close()
    if with_broker:
        write_broker_config(
            path / BROKER_DIR,
            ca=ca,
            host=settings.broker_host,
            port=settings.broker_port,
            namespace=settings.namespace,
            now=start,
        )


def open_state_dir(path: Path) -> StateDir:
    """Open an existing state directory after checking its files and their permissions."""
    _check_private(path, directory=True)
    for name in _REQUIRED_FILES:
        _check_private(path / name, directory=False)
    settings = ControlPlaneSettings.from_json(bytes(_state_file(path, SETTINGS_FILE)))
    return StateDir(path=path, settings=settings)
