"""Pool identity (gate 1): the pool key, the CSR, the token, and the certificate checks.

* :mod:`.keys` — the pool private key from ``SPACELIFT_POOL_PRIVATE_KEY``, and generating one.
* :mod:`.csr` — openssl-style subjects, making and reading certificate signing requests.
* :mod:`.token` — the ``SPACELIFT_TOKEN`` format (docs/token.md).
* :mod:`.certificates` — :func:`check_pool_identity` → :class:`PoolIdentity`.
* :mod:`.issuing` — the control-plane side: a CA, pool certificates, tokens.
"""

from hardened_launcher.identity.certificates import (
    POOL_ID_URI_PREFIX,
    IdentityRejectedError,
    PoolIdentity,
    check_pool_identity,
    pool_id_uri,
)
from hardened_launcher.identity.csr import (
    CsrError,
    SubjectError,
    create_csr,
    csr_to_pem,
    load_csr_pem,
    parse_subject,
)
from hardened_launcher.identity.issuing import (
    CertificateAuthority,
    CertificateProfile,
    IssuingError,
    build_token,
)
from hardened_launcher.identity.keys import (
    PoolKeyError,
    PoolPrivateKey,
    describe_public_key,
    load_pool_private_key,
    public_key_id,
)
from hardened_launcher.identity.token import Token, TokenError, is_valid_pool_id

__all__ = [
    "POOL_ID_URI_PREFIX",
    "CertificateAuthority",
    "CertificateProfile",
    "CsrError",
    "IdentityRejectedError",
    "IssuingError",
    "PoolIdentity",
    "PoolKeyError",
    "PoolPrivateKey",
    "SubjectError",
    "Token",
    "TokenError",
    "build_token",
    "check_pool_identity",
    "create_csr",
    "csr_to_pem",
    "describe_public_key",
    "is_valid_pool_id",
    "load_csr_pem",
    "load_pool_private_key",
    "parse_subject",
    "pool_id_uri",
    "public_key_id",
]
