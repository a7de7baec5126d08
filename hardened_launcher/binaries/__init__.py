"""Gate 2 (binaries): signed SHA256SUMS verification and the verified-binary cache.

- :mod:`~hardened_launcher.binaries.sums` parses SHA256SUMS files (pure, bounded);
- :mod:`~hardened_launcher.binaries.openpgp` checks detached signatures against pinned keys and
  turns pysequoia's generic failures into specific reasons;
- :mod:`~hardened_launcher.binaries.verify` is the gate: a :class:`VerifiedBinary` or an error;
- :mod:`~hardened_launcher.binaries.cache` keeps verified binaries content-addressed, read-only.
"""

from hardened_launcher.binaries.cache import VerifiedBinaryCache
from hardened_launcher.binaries.openpgp import (
    DetachedSignature,
    Keyring,
    SignatureVerified,
    normalize_fingerprint,
    normalize_pins,
    verify_detached,
)
from hardened_launcher.binaries.sums import SumsEntry, SumsFile, SumsStyle, parse_sums, render_sums
from hardened_launcher.binaries.verify import VerifiedBinary, hash_file, verify_binary

__all__ = [
    "DetachedSignature",
    "Keyring",
    "SignatureVerified",
    "SumsEntry",
    "SumsFile",
    "SumsStyle",
    "VerifiedBinary",
    "VerifiedBinaryCache",
    "hash_file",
    "normalize_fingerprint",
    "normalize_pins",
    "parse_sums",
    "render_sums",
    "verify_binary",
    "verify_detached",
]
