"""The FastAPI application: routes, error handlers, middleware, and the gateway's lifespan."""

from __future__ import annotations

import logging
from contextlib import asynccontextmanager

from fastapi import FastAPI

from bioinstruct import __version__
from bioinstruct.service.engine import EngineProcess, EngineSettings
from bioinstruct.service.errors import install_error_handlers
from bioinstruct.service.gateway import Gateway
from bioinstruct.service.middleware import GatewayMiddleware, install_request_context
from bioinstruct.service.observability import ObservabilitySettings, build_tracing
from bioinstruct.service.routes import admin, health, inference, openai_compat
from bioinstruct.service.settings import ServiceSettings
from bioinstruct.settings import CoreSettings

log = logging.getLogger("bioinstruct.service")

DESCRIPTION = """
Biomedical task endpoints over one base model and hot-swappable LoRA adapters served by vLLM.

`adapter` (task routes) and `model` (OpenAI routes) take an alias (`qa`), a pinned version
(`bioinstruct-qa@3`), `base`, or `auto`. Errors are OpenAI-shaped:
`{"error": {"message", "type", "param", "code"}}`.
"""


def create_app(
    settings: ServiceSettings | None = None,
    *,
    core: CoreSettings | None = None,
    engine_settings: EngineSettings | None = None,
    engine_process: EngineProcess | None = None,
    observability: ObservabilitySettings | None = None,
    tracer_provider=None,
) -> FastAPI:
    """`tracer_provider` (an OpenTelemetry SDK TracerProvider) is for tests; otherwise traces are
    on when BIOINSTRUCT_OTEL_ENABLED is (service/observability.py)."""
    settings = settings or ServiceSettings()
    core = core or CoreSettings()
    tracing = build_tracing(observability, tracer_provider)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gateway = Gateway(settings, core, engine_settings, engine_process)
        await gateway.start()
        app.state.gateway = gateway
        try:
            yield
        finally:
            app.state.gateway = None
            await gateway.stop()
            if tracing is not None:
                tracing.shutdown()  # flush the spans still batched

    app = FastAPI(title="BioInstruct", version=__version__, description=DESCRIPTION, lifespan=lifespan)
    app.state.gateway = None
    install_error_handlers(app)
    for module in (inference, openai_compat, admin, health):
        app.include_router(module.router)
    app.add_middleware(GatewayMiddleware, max_body_bytes=settings.max_body_bytes,
                       body_timeout_s=settings.body_timeout_s)
    install_request_context(app, tracing)

    default_openapi = app.openapi

    def openapi() -> dict:
        # The /v1 bodies are relayed, not parsed into models: their schema is written out, with
        # this server's limits (openai_compat.document_request_bodies); the task routes' token
        # limit is a setting too (inference.document_token_limit).
        if app.openapi_schema is None:
            schema = default_openapi()
            openai_compat.document_request_bodies(schema, settings.max_tokens_limit)
            inference.document_token_limit(schema, settings.max_tokens_limit)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
