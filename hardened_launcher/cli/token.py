"""CLI command: ``token inspect`` — print the non-secret fields of the pool token."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes

from hardened_launcher.errors import ConfigurationError
from hardened_launcher.identity.certificates import format_time
from hardened_launcher.identity.keys import describe_public_key
from hardened_launcher.identity.token import MAX_ENCODED_TOKEN_BYTES, TOKEN_VARIABLE, Token
from hardened_launcher.secrets import Secret
from hardened_launcher.terminal import for_terminal

STDIN = "-"


def register(sub: argparse._SubParsersAction[Any]) -> None:
    parser = sub.add_parser(
        "token",
        help="inspect the pool token (SPACELIFT_TOKEN)",
        description="Work with the pool token the control plane issued.",
    )
    actions = parser.add_subparsers(dest="token_command", parser_class=type(parser))
    actions.required = True
    inspect = actions.add_parser(
        "inspect",
        help="print the token's non-secret fields",
        description=(
            f"Decode the token (default: the {TOKEN_VARIABLE} environment variable) and print "
            "its version, pool id, endpoints, certificate and CA details and the run-state "
            "signing key fingerprint. Nothing is verified here; the launcher checks the "
            "certificates against the pool key at start-up."
        ),
    )
    inspect.add_argument(
        "--token",
        metavar="VALUE",
        help=f"the token, or '-' to read it from standard input (default: ${TOKEN_VARIABLE}). "
        "A value given on the command line is visible to other local users in the process "
        "list: prefer '-' or the environment variable",
    )
    inspect.add_argument(
        "--format", choices=("text", "json"), default="text", help="output format (default: text)"
    )
    inspect.set_defaults(handler=run_inspect)


def _read_token(value: str | None) -> Secret:
    if value == STDIN:
        data = sys.stdin.buffer.read(MAX_ENCODED_TOKEN_BYTES + 1)
        return Secret.from_bytearray(bytearray(data))
    if value is not None:
        sys.stderr.write(
            "warning: a token given with --token is visible in the process list; "
            f"prefer --token - (standard input) or {TOKEN_VARIABLE}\n"
        )
        return Secret(value)
    # Imported here: settings validates every variable, which only this path needs.
    from hardened_launcher.settings import load_settings  # noqa: PLC0415

    secret = load_settings().token
    if secret is None:
        raise ConfigurationError(
            f"{TOKEN_VARIABLE} is not set",
            hint=f"Set {TOKEN_VARIABLE}, or pass --token - and give the token on standard input",
            reason="token_missing",
        )
    return secret


def _certificate_summary(cert: x509.Certificate) -> dict[str, str]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "serial": format(cert.serial_number, "x"),
        "not_before": format_time(cert.not_valid_before_utc),
        "not_after": format_time(cert.not_valid_after_utc),
        "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        "key_algorithm": describe_public_key(cert.public_key()),
    }


def summarize(token: Token) -> dict[str, object]:
    """The printable view of a token: every field but the token itself, keys as fingerprints."""
    return {
        "version": token.version,
        "pool_id": token.pool_id,
        "broker_url": token.broker_url,
        "mqtt_namespace": token.mqtt_namespace,
        "control_plane_url": token.control_plane_url,
        "pool_certificate": _certificate_summary(token.pool_certificate),
        "ca_certificate": _certificate_summary(token.ca_certificate),
        "run_state_signing_key": {
            "algorithm": "Ed25519",
            "sha256": token.signing_key_sha256.hex(),
        },
        # Never the key itself: whether the policy can compare secrets before decryption.
        "policy_sanitize_key": "present"
        if token.policy_sanitize_key is not None
        else "absent (a token from an older control plane: pool reset re-issues it)",
    }


def _render_text(summary: dict[str, object]) -> str:
    lines: list[str] = []
    labels = {
        "version": "version",
        "pool_id": "pool id",
        "broker_url": "broker",
        "mqtt_namespace": "MQTT namespace",
        "control_plane_url": "control plane",
        "pool_certificate": "pool certificate",
        "ca_certificate": "CA certificate",
        "run_state_signing_key": "run-state signing key",
        "policy_sanitize_key": "policy sanitize key",
        "not_before": "not before",
        "not_after": "not after",
        "key_algorithm": "key algorithm",
        "sha256": "SHA-256",
    }
    for key, value in summary.items():
        if isinstance(value, dict):
            lines.append(f"{labels.get(key, key)}:")
            lines.extend(
                f"  {labels.get(str(sub), str(sub)) + ':':<16}{sub_value}"
                for sub, sub_value in value.items()
            )
        else:
            lines.append(f"{labels.get(key, key) + ':':<18}{value}")
    return "\n".join(for_terminal(line) for line in lines) + "\n"


def run_inspect(args: argparse.Namespace) -> int:
    with _read_token(args.token) as secret:
        token = Token.from_encoded(secret)
    summary = summarize(token)
    if args.format == "json":
        sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    else:
        sys.stdout.write(_render_text(summary))
    return 0
