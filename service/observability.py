"""Request ids, the log format and OpenTelemetry traces of the gateway.

- Every request carries an id: the caller's `X-Request-Id` when it is safe (1-128 characters of
  letters, digits and `._:-`), otherwise a new one. It is returned on every response, sent to the
  engine on every call made for the request, and added to every log line written while the
  request runs (a context variable read by a logging filter).
- Logs are text or one JSON object per line (BIOINSTRUCT_LOG_FORMAT), configured in one place,
  configure_logging(), for our loggers and uvicorn's alike.
- With BIOINSTRUCT_OTEL_ENABLED, each request gets a server span (continuing the caller's
  `traceparent`) and each engine call a client span whose `traceparent` goes to vLLM, which
  continues the trace when started with its own `--otlp-traces-endpoint`. The exporter follows
  the standard OTEL_* variables. OpenTelemetry is the optional `otel` extra: nothing here imports
  it unless tracing is on.
"""

from __future__ import annotations

import json
import logging
import logging.config
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from typing import Any, Literal

from pydantic import ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

REQUEST_ID_HEADER = "X-Request-Id"
# Safe to echo in a header and a log line: no spaces, quotes or control characters; bounded.
_REQUEST_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s] %(message)s"
OTEL_EXTRA_HINT = "install the otel extra: pip install 'bioinstruct[otel]'"


class ObservabilitySettings(BaseSettings):
    """BIOINSTRUCT_LOG_FORMAT and BIOINSTRUCT_OTEL_ENABLED; the exporter itself reads the standard
    OTEL_EXPORTER_OTLP_* / OTEL_SERVICE_NAME / OTEL_TRACES_SAMPLER variables."""

    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_", extra="ignore")

    log_format: Literal["text", "json"] = "text"
    otel_enabled: bool = False


class ObservabilityError(RuntimeError):
    """A setting that cannot be honoured; the message says what to change."""


@lru_cache(maxsize=1)
def observability_settings() -> ObservabilitySettings:
    try:
        return ObservabilitySettings()
    except ValidationError as exc:
        problems = "; ".join(f"BIOINSTRUCT_{'_'.join(map(str, e['loc'])).upper()}: {e['msg']}"
                             for e in exc.errors())
        raise ObservabilityError(f"bad logging/tracing setting: {problems}") from None


# ---- request ids -------------------------------------------------------------------------------

request_id_var: ContextVar[str | None] = ContextVar("bioinstruct_request_id", default=None)
_tracer_var: ContextVar[Any] = ContextVar("bioinstruct_tracer", default=None)


def accept_request_id(value: str | None) -> str:
    """The caller's id when it is safe to echo and log, else a new one (32 hex digits)."""
    if value and _REQUEST_ID_RE.match(value):
        return value
    return uuid.uuid4().hex


def current_request_id() -> str | None:
    return request_id_var.get()


@contextmanager
def request_context(request_id: str, tracer: Any = None) -> Iterator[None]:
    """Makes `request_id` (and the tracer, if any) current for everything this request runs."""
    rid_token = request_id_var.set(request_id)
    tracer_token = _tracer_var.set(tracer)
    try:
        yield
    finally:
        _tracer_var.reset(tracer_token)
        request_id_var.reset(rid_token)


# ---- logs --------------------------------------------------------------------------------------

class RequestIdFilter(logging.Filter):
    """Adds `request_id` ("-" outside a request) to every record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        record.request_id = request_id_var.get() or "-"
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request_id, and trace_id/span_id
    while a span is current, plus the exception when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None) or request_id_var.get() or "-",
        }
        entry.update(_trace_ids())
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


def _trace_ids() -> dict[str, str]:
    if _tracer_var.get() is None:
        return {}
    from opentelemetry import trace

    ctx = trace.get_current_span().get_span_context()
    if not ctx.is_valid:
        return {}
    return {"trace_id": f"{ctx.trace_id:032x}", "span_id": f"{ctx.span_id:016x}"}


def logging_config(level: str = "info", log_format: str | None = None) -> dict[str, Any]:
    """A dictConfig for the whole process: one stderr handler on the root logger with the
    request-id filter; uvicorn's loggers propagate to it (so its access lines carry the id too)."""
    log_format = log_format or observability_settings().log_format
    level = level.upper()
    formatter: dict[str, Any] = ({"()": f"{__name__}.JsonFormatter"} if log_format == "json"
                                 else {"format": TEXT_FORMAT})
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": f"{__name__}.RequestIdFilter"}},
        "formatters": {"default": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "default",
                                 "filters": ["request_id"], "stream": "ext://sys.stderr"}},
        "loggers": {
            "uvicorn": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.error": {"handlers": [], "level": level, "propagate": True},
            "uvicorn.access": {"handlers": [], "level": level, "propagate": True},
            # One line per engine call would drown the request's own lines.
            "httpx": {"level": "WARNING"},
        },
        "root": {"handlers": ["default"], "level": level},
    }


def configure_logging(level: str = "info", log_format: str | None = None) -> dict[str, Any]:
    """Apply logging_config() now and return it, for uvicorn.run(log_config=...) to apply again."""
    config = logging_config(level, log_format)
    logging.config.dictConfig(config)
    return config


# ---- traces ------------------------------------------------------------------------------------

class Tracing:
    """The gateway's tracer and its provider (flushed on shutdown)."""

    def __init__(self, provider: Any, owned: bool) -> None:
        self.provider = provider
        self.tracer = provider.get_tracer("bioinstruct.gateway")
        self._owned = owned

    def shutdown(self) -> None:
        if self._owned:
            self.provider.shutdown()


def build_tracing(settings: ObservabilitySettings | None = None, provider: Any = None) -> Tracing | None:
    """None when tracing is off. `provider` (an SDK TracerProvider) is for tests, e.g. with an
    in-memory exporter; otherwise one is made that exports over OTLP as the OTEL_* variables say."""
    settings = settings or observability_settings()
    if provider is not None:
        return Tracing(provider, owned=False)
    if not settings.otel_enabled:
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise ObservabilityError(f"BIOINSTRUCT_OTEL_ENABLED=true but OpenTelemetry is not installed: "
                                 f"{OTEL_EXTRA_HINT}, or unset BIOINSTRUCT_OTEL_ENABLED") from exc
    # OTEL_SERVICE_NAME, when set, names the service; an attribute passed here would override it.
    attributes = {} if os.environ.get("OTEL_SERVICE_NAME") else {"service.name": "bioinstruct-gateway"}
    provider = TracerProvider(resource=Resource.create(attributes))  # sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(BatchSpanProcessor(_otlp_exporter()))
    return Tracing(provider, owned=True)


def _otlp_exporter() -> Any:
    protocol = (os.environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
                or os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf")
    try:
        if protocol == "grpc":
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        elif protocol == "http/protobuf":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        else:
            raise ObservabilityError(f"OTEL_EXPORTER_OTLP_PROTOCOL={protocol!r} is not supported here: "
                                     "use grpc or http/protobuf")
    except ImportError as exc:
        raise ObservabilityError(f"the OTLP {protocol} exporter is not installed: {OTEL_EXTRA_HINT}") from exc
    return OTLPSpanExporter()  # endpoint, headers, timeout: the OTEL_EXPORTER_OTLP_* variables


@contextmanager
def server_span(tracing: Tracing | None, scope: dict[str, Any]) -> Iterator[Any]:
    """The request's span (current while the request runs), continuing an incoming traceparent."""
    if tracing is None:
        yield None
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    carrier = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers") or []}
    method = scope.get("method", "GET")
    with tracing.tracer.start_as_current_span(
        f"{method} {scope.get('path', '')}", context=propagate.extract(carrier), kind=SpanKind.SERVER,
        attributes={"http.request.method": method, "url.path": scope.get("path", ""),
                    "url.scheme": scope.get("scheme", "http")},
    ) as span:
        yield span


def finish_server_span(span: Any, scope: dict[str, Any], status: int, request_id: str) -> None:
    """Name the span by its route template (not the raw path) and record the outcome."""
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    route = getattr(scope.get("route"), "path", None)
    if route:
        span.update_name(f"{scope.get('method', 'GET')} {route}")
        span.set_attribute("http.route", route)
    span.set_attribute("http.response.status_code", status)
    span.set_attribute("bioinstruct.request_id", request_id)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


@contextmanager
def engine_span(method: str, url: str) -> Iterator[Any]:
    """A client span around one engine call, current inside the block (so engine_headers()
    puts it in `traceparent`); None outside a traced request."""
    span = start_engine_span(method, url)
    if span is None:
        yield None
        return
    from opentelemetry import trace

    with trace.use_span(span, end_on_exit=True, record_exception=True, set_status_on_exception=True):
        yield span


def start_engine_span(method: str, url: str) -> Any:
    """A client span that the caller ends (end_span), for a stream that outlives the call."""
    tracing = _tracer_var.get()
    if tracing is None:
        return None
    from opentelemetry.trace import SpanKind

    path = url.split("://", 1)[-1].partition("/")[2]
    return tracing.tracer.start_span(f"engine {method} /{path}", kind=SpanKind.CLIENT,
                                     attributes={"http.request.method": method, "url.full": url,
                                                 "bioinstruct.request_id": request_id_var.get() or "-"})


def record_response(span: Any, status: int) -> None:
    if span is None:
        return
    from opentelemetry.trace import Status, StatusCode

    span.set_attribute("http.response.status_code", status)
    if status >= 500:
        span.set_status(Status(StatusCode.ERROR))


def end_span(span: Any, error: BaseException | None = None) -> None:
    if span is None:
        return
    if error is not None:
        from opentelemetry.trace import Status, StatusCode

        span.record_exception(error)
        span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    span.end()


def engine_headers(span: Any = None) -> dict[str, str]:
    """Headers for a call to the engine: X-Request-Id, and the trace context (`traceparent`) of
    `span`, or of the current span, while tracing is on."""
    headers: dict[str, str] = {}
    rid = request_id_var.get()
    if rid:
        headers[REQUEST_ID_HEADER] = rid
    if _tracer_var.get() is not None:
        from opentelemetry import propagate, trace

        propagate.inject(headers, context=trace.set_span_in_context(span) if span is not None else None)
    return headers
