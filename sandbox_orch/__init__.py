"""sandbox-orch: run untrusted commands and AI coding agents in disposable, hardened containers."""

__version__ = "0.1.0"
