"""Bearer-token auth: inference keys (each optionally limited to some adapters) and the admin token."""

from __future__ import annotations

import hashlib
import hmac

from fastapi import Request

from bioinstruct.service.errors import APIError
from bioinstruct.service.settings import ServiceSettings


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class Caller:
    """Who is calling and which adapters they may use."""

    def __init__(self, key_id: str | None, allowed: list[str] | None, session: str | None = None) -> None:
        self.key_id = key_id
        self.allowed = allowed  # None: every adapter
        self.session = session  # sticky key: one caller sees one version of a canary split

    def check(self, target) -> None:
        """Refuse a target none of whose names (alias, adapter, version, "base") the key lists."""
        if self.allowed is None or "*" in self.allowed:
            return
        names = {"base"} if target.name is None else {target.alias, target.name, target.model}
        if not names & set(self.allowed):
            shown = target.alias or target.model
            raise APIError(403, f"this API key may not use adapter {shown!r}; it may use {self.allowed}",
                           param="adapter", code="adapter_forbidden")


def authenticate(request: Request, settings: ServiceSettings) -> Caller:
    session = request.headers.get(settings.sticky_header) or None
    if not settings.api_keys:
        return Caller(None, None, session)
    token = _bearer(request)
    if token is None:
        raise APIError(401, "missing API key: send 'Authorization: Bearer <key>'", code="missing_api_key")
    for key, allowed in settings.api_keys.items():
        if hmac.compare_digest(token.encode(), key.encode()):
            return Caller("key-" + hashlib.sha256(key.encode()).hexdigest()[:8], list(allowed), session)
    raise APIError(401, "invalid API key", code="invalid_api_key")


def require_admin(request: Request, settings: ServiceSettings) -> None:
    if settings.admin_token is None:
        raise APIError(403, "admin API disabled: set BIOINSTRUCT_ADMIN_TOKEN to enable it", code="admin_disabled")
    token = _bearer(request)
    if token is None or not hmac.compare_digest(token.encode(), settings.admin_token.get_secret_value().encode()):
        raise APIError(401, "admin routes need 'Authorization: Bearer <admin token>'", code="invalid_admin_token")
