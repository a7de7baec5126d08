"""Which of the launcher's own values are masked, wherever its output goes.

The pool token and private key (as given, and the private key's decoded PEM) and the values of the
variables named in ``SPACELIFT_MASK_ENVS`` are masked in the launcher's own logs and error text
from the first line it prints; a run adds its own secret variables on top (executor).

This reads the raw environment on purpose: it must work before, and even when, the settings fail
to parse, since a settings error is exactly when an operator runs ``-v``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

from hardened_launcher.ascii_text import trim
from hardened_launcher.credential_files import credential_text_or_empty
from hardened_launcher.redaction.redactor import Redactor

SECRET_VARIABLES = ("SPACELIFT_TOKEN", "SPACELIFT_POOL_PRIVATE_KEY")


def launcher_secret_values(environ: Mapping[str, str]) -> list[tuple[str, bytes]]:
    """``(variable name, value)`` pairs to mask, from the launcher's environment."""
    values: list[tuple[str, bytes]] = []
    for name in SECRET_VARIABLES:
        # The value may come from a file (SPACELIFT_*_FILE, systemd credentials) instead.
        raw = trim(environ.get(name, "")) or credential_text_or_empty(environ, name)
        if not raw:
            continue
        values.append((name, raw.encode("utf-8", "surrogateescape")))
        if name == "SPACELIFT_POOL_PRIVATE_KEY":
            # Imported only here: the identity package (cryptography) is slow to import and a
            # command run without a key should not pay for it.
            from hardened_launcher.identity.base64text import (  # noqa: PLC0415
                Base64DecodeError,
                decode_base64,
            )

            try:
                decoded = decode_base64(raw.encode("ascii", "ignore"))
            except Base64DecodeError:
                continue
            values.append((name, bytes(decoded)))
            decoded[:] = bytes(len(decoded))
    for item in environ.get("SPACELIFT_MASK_ENVS", "").split(","):
        masked = item.strip()
        value = environ.get(masked, "") if masked else ""
        if value:
            values.append((masked, value.encode("utf-8", "surrogateescape")))
    return values


def install_process_redactor(environ: Mapping[str, str]) -> Redactor | None:
    """Mask the launcher's own secret values in every record of the root logger's handlers."""
    values = launcher_secret_values(environ)
    if not values:
        return None
    from hardened_launcher.redaction.logging import install  # noqa: PLC0415 - avoids a cycle

    redactor = Redactor()
    redactor.add_many(values)
    install(redactor, logging.getLogger())
    return redactor
