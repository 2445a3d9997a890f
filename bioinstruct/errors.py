"""The registry's errors: what was refused and a machine-readable code. Which HTTP status
fits each is the service's business (service/errors.py)."""

from __future__ import annotations


class RegistryError(Exception):
    """A registry operation or an adapter folder was refused; the message says what to change."""

    def __init__(self, message: str, *, code: str = "invalid_adapter"):
        super().__init__(message)
        self.message = message
        self.code = code


class NotFound(RegistryError):
    def __init__(self, message: str):
        super().__init__(message, code="adapter_not_found")


class Conflict(RegistryError):
    def __init__(self, message: str):
        super().__init__(message, code="conflict")


class RegistryUnavailable(RegistryError):
    """The registry's store could not be read or written (network, permissions, a server
    error): not the caller's mistake, and not a reason to believe anything is absent."""

    def __init__(self, message: str):
        super().__init__(message, code="registry_unavailable")
