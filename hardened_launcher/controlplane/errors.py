"""Errors of the reference control plane, by whose fault they are."""

from __future__ import annotations

from hardened_launcher.errors import ConfigurationError, InfrastructureError, UsageError


class ControlPlaneConfigurationError(ConfigurationError):
    """The state directory or the control plane's settings are wrong."""

    default_reason = "controlplane_configuration_invalid"


class NotFoundError(UsageError):
    """The operator named a pool, worker or run that does not exist."""

    default_reason = "not_found"


class ConflictError(UsageError):
    """The operator asked for something the current state does not allow."""

    default_reason = "state_conflict"


class StoreError(InfrastructureError):
    """The SQLite store failed (disk, lock, corruption)."""

    default_reason = "store_failed"


class ObjectStorageError(InfrastructureError):
    """Object storage (S3) refused or failed a request."""

    default_reason = "object_storage_failed"
