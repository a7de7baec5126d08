"""hardened-launcher: a security-hardened worker-pool launcher."""

__version__ = "0.1.0"
