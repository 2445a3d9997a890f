"""respx routers that fake only the `.test` hosts of a test and let every other request through.

respx patches httpx for the whole process, not for one client: while a test mocks its fake
gateway, the session's live gateway (its own thread) keeps calling the real engine on
127.0.0.1. Without a pass-through those calls failed with respx's "not mocked" error, which
killed the live supervisor's watchdog and left every later test facing a dead engine
(make test failed depending on which test started the live gateway first).
"""

from __future__ import annotations

import respx


def fake_hosts_router(**kwargs) -> respx.MockRouter:
    """A MockRouter (decorator or context manager) for fake `*.test` hosts; all else is real."""
    router = respx.mock(**kwargs)
    router.route(~respx.patterns.M(host__regex=r"\.test$")).pass_through()
    return router
