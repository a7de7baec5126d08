"""The reference control plane: CA and pool registry, run queue, dispatch, log URLs.

Modules: ``store`` (SQLite), ``dispatch`` (the pure state machine), ``ca`` (the state
directory: CA, signing key, broker client certificate), ``pools`` and ``runs`` (operator
actions), ``logs`` (presigned S3 URLs), ``serve`` (the loop over a transport). See
``docs/controlplane.md``.
"""
