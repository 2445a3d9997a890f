"""What operators look at: request ids, logs, traces, the dashboard and the alert rules.

- Request ids: a safe X-Request-Id is kept, anything else replaced; the id is on every response
  (error pages, early 413s and 404s included), on every call to the engine, and on every log
  line the request writes (threads and uvicorn's access line too), in text and in JSON.
  Checked on a small app built with the gateway's own middleware, error handlers and
  EngineClient, served by real uvicorn, against a loopback stand-in engine that records headers.
- Traces: with an in-memory exporter, a request makes a server span continuing the caller's
  traceparent and one client span per engine call, whose traceparent the engine receives; the
  OTLP exporter really posts to a loopback collector; no otel extra gives a clear error.
- The Grafana dashboard and the PrometheusRule rendered by the chart: every PromQL expression
  parses (promql-parser, a real PromQL parser) and names only metrics the gateway exports
  (bioinstruct.service.metrics.Metrics) or a documented external exporter's; docs/DEPLOY.md
  lists every panel and every alert.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import io
import json
import logging
import logging.config
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import promql_parser
import pytest
import uvicorn
import yaml
from fastapi import FastAPI
from fastapi.testclient import TestClient

from bioinstruct.service.engine_client import EngineClient
from bioinstruct.service.errors import install_error_handlers
from bioinstruct.service.middleware import (
    GatewayMiddleware,
    RequestContextMiddleware,
    install_request_context,
)
from bioinstruct.service.observability import (
    ObservabilityError,
    ObservabilitySettings,
    accept_request_id,
    build_tracing,
    logging_config,
    observability_settings,
)
from tests import test_deploy
from tests.fake_engine import QuietHandler
from tests.test_deploy import CHART, by_kind, render

helm = test_deploy.helm  # the real helm binary (scripts/get-helm.sh)
ROOT = Path(__file__).resolve().parents[1]
DEPLOY_DOC = ROOT / "docs" / "DEPLOY.md"
DASHBOARD = CHART / "dashboards" / "bioinstruct.json"
MONITORING_VALUES = {"monitoring": {"dashboard": {"enabled": True}, "prometheusRule": {"enabled": True}}}


# ---- a stand-in engine on loopback that records what it is sent ---------------------------------

class RecordingEngine:
    """Answers /v1/completions (JSON), /v1/chat/completions (SSE), /fail (500), /health; records
    each request's path and headers."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        engine = self

        class Handler(QuietHandler):

            def do_GET(self) -> None:  # noqa: N802
                engine.calls.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                self.send(200, b"{}", "application/json")

            def do_POST(self) -> None:  # noqa: N802
                self.rfile.read(int(self.headers.get("content-length") or 0))
                engine.calls.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.path == "/v1/completions":
                    self.send(200, b'{"choices": [{"text": "ok"}]}', "application/json")
                elif self.path == "/v1/chat/completions":
                    events = b'data: {"choices": [{"delta": {"content": "o"}}]}\n\ndata: [DONE]\n\n'
                    self.send(200, events, "text/event-stream")
                else:
                    self.send(500, b'{"error": {"message": "boom"}}', "application/json")

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recording_engine():
    e = RecordingEngine()
    yield e
    e.stop()


def make_app(engine_url: str, tracing=None) -> FastAPI:
    """A small app with the gateway's own layers: error handlers, GatewayMiddleware, the request
    context outermost (as service/app.py wires them), and an EngineClient to the engine."""
    log = logging.getLogger("bioinstruct.service")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.client = EngineClient(engine_url)
        yield
        await app.state.client.aclose()

    app = FastAPI(lifespan=lifespan)
    app.state.gateway = None
    install_error_handlers(app)

    @app.post("/work/{item}")
    async def work(item: str, pause: float = 0.0):
        client = app.state.client
        log.info("work on %s starts", item)
        await asyncio.sleep(pause)
        await asyncio.to_thread(log.info, "a worker thread on %s", item)
        await client.post("/v1/completions", {"prompt": item})
        events = [e async for e in client.stream_events("/v1/chat/completions", {"stream": True})]
        log.info("work on %s done (%d events)", item, len(events))
        return {"ok": True}

    @app.post("/fail")
    async def fail():
        await app.state.client.post("/fail", {})

    @app.get("/boom")
    async def boom():
        raise RuntimeError("an unexpected bug")

    app.add_middleware(GatewayMiddleware, max_body_bytes=1000)
    install_request_context(app, tracing)
    return app


# ---- request ids -------------------------------------------------------------------------------

@pytest.mark.parametrize(("sent", "kept"), [
    ("rid-123", True),
    ("0af7651916cd43dd8448eb211c80319c", True),
    ("trace:abc.DEF_9-x", True),
    ("a" * 128, True),
    ("a" * 129, False),  # too long
    ("", False),
    ("has space", False),
    ('quote"d', False),
    ("-leading-dash", False),
    ("semi;colon", False),
    ("ünïcode", False),
])
def test_request_id_accepted_only_when_safe(sent, kept):
    got = accept_request_id(sent)
    if kept:
        assert got == sent
    else:
        assert got != sent and re.fullmatch(r"[0-9a-f]{32}", got)
    assert accept_request_id(None) != accept_request_id(None)


def test_request_id_on_every_response_and_sent_to_the_engine(recording_engine):
    app = make_app(recording_engine.url)
    with TestClient(app, raise_server_exceptions=False) as client:
        r = client.post("/work/x", headers={"X-Request-Id": "rid-123"})
        assert r.status_code == 200 and r.headers["x-request-id"] == "rid-123"
        assert [(p, h.get("x-request-id")) for p, h in recording_engine.calls] == \
            [("/v1/completions", "rid-123"), ("/v1/chat/completions", "rid-123")]
        # Unsafe or absent: a fresh id, still returned and still sent on.
        recording_engine.calls.clear()
        r = client.post("/work/y", headers={"X-Request-Id": "bad id"})
        new = r.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", new)
        assert {h["x-request-id"] for _, h in recording_engine.calls} == {new}
        ids = set()
        for method, path, kwargs, status in [
            ("GET", "/boom", {}, 500),                       # Starlette's error page, outermost
            ("GET", "/nowhere", {}, 404),
            ("POST", "/work/z", {"content": b"x" * 2000}, 413),  # refused before the route
            ("POST", "/fail", {}, 503),                      # the engine failed
            ("POST", "/work/z", {"params": {"pause": "soon"}}, 400),
        ]:
            r = client.request(method, path, **kwargs)
            assert r.status_code == status, (path, r.text)
            assert re.fullmatch(r"[0-9a-f]{32}", r.headers["x-request-id"]), path
            assert r.headers.get_list("x-request-id") == [r.headers["x-request-id"]]  # exactly one
            ids.add(r.headers["x-request-id"])
        assert len(ids) == 5


@pytest.mark.engine
def test_request_id_reaches_the_real_engine(live_service):
    """vLLM takes the gateway's X-Request-Id as its own request id: its completion id says so."""
    r = httpx.post(f"{live_service.base_url}/v1/completions", headers={"X-Request-Id": "live-rid-1"},
                   json={"model": "base", "prompt": "Insulin is", "max_tokens": 4, "temperature": 0},
                   timeout=120)
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "live-rid-1"
    assert r.json()["id"] == "cmpl-live-rid-1"


def test_the_real_gateway_app_wires_request_context():
    """create_app itself puts the request context outermost (no engine is started here)."""
    from bioinstruct.service.app import create_app

    app = create_app()
    assert isinstance(app.build_middleware_stack(), RequestContextMiddleware)
    client = TestClient(app)  # no `with`: the lifespan (engine start) does not run
    r = client.get("/health/live", headers={"X-Request-Id": "probe-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "probe-1"
    assert re.fullmatch(r"[0-9a-f]{32}", client.get("/health/ready").headers["x-request-id"])


# ---- logs --------------------------------------------------------------------------------------

_LOGGERS = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx")


@pytest.fixture
def logs():
    """Applies logging_config() (as `bioinstruct serve` does) with its handler writing to a buffer;
    puts the process's logging back afterwards."""
    saved = {name: (lg.handlers[:], lg.level, lg.propagate, lg.disabled, lg.filters[:])
             for name in _LOGGERS for lg in [logging.getLogger(name)]}

    def apply(log_format: str) -> tuple[io.StringIO, dict[str, Any]]:
        buffer = io.StringIO()
        config = logging_config("info", log_format)
        config["handlers"]["default"]["stream"] = buffer
        logging.config.dictConfig(config)
        return buffer, config

    yield apply
    for name, (handlers, level, propagate, disabled, filters) in saved.items():
        lg = logging.getLogger(name)
        lg.handlers[:], lg.level, lg.propagate, lg.disabled, lg.filters[:] = handlers, level, propagate, \
            disabled, filters


@contextlib.contextmanager
def served(app: FastAPI, log_config: dict[str, Any]):
    """The app under real uvicorn on a loopback port, with the CLI's log config."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_config=log_config, log_level="info", access_log=True, lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=20)
        sock.close()


def test_every_log_line_of_a_request_carries_its_id_json(recording_engine, logs):
    buffer, config = logs("json")
    app = make_app(recording_engine.url)

    async def two_at_once(base: str) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=base, timeout=30) as client:
            return await asyncio.gather(
                client.post("/work/alpha", params={"pause": 0.2}, headers={"X-Request-Id": "rid-alpha"}),
                client.post("/work/beta", params={"pause": 0.0}, headers={"X-Request-Id": "rid-beta"}))

    with served(app, config) as base:
        responses = asyncio.run(two_at_once(base))
        assert [r.headers["x-request-id"] for r in responses] == ["rid-alpha", "rid-beta"]
        time.sleep(0.2)  # the access line is written as the response goes out
    lines = [json.loads(line) for line in buffer.getvalue().splitlines()]
    assert lines, "nothing was logged"
    for line in lines:
        assert set(line) >= {"time", "level", "logger", "message", "request_id"}, line
    for item, rid in (("alpha", "rid-alpha"), ("beta", "rid-beta")):
        mine = [line for line in lines if line["request_id"] == rid]
        messages = [line["message"] for line in mine]
        assert f"work on {item} starts" in messages
        assert f"a worker thread on {item}" in messages          # a thread of the request
        assert f"work on {item} done (1 events)" in messages
        access = [line for line in mine if line["logger"] == "uvicorn.access"]
        assert len(access) == 1 and f"POST /work/{item}" in access[0]["message"], mine
        # No line of this request went out under another id.
        assert not [line for line in lines if item in line["message"] and line["request_id"] != rid]
    # Lines outside any request (start-up, shut-down) say so.
    assert any(line["request_id"] == "-" and line["logger"].startswith("uvicorn") for line in lines)
    assert {h["x-request-id"] for _, h in recording_engine.calls} == {"rid-alpha", "rid-beta"}


def test_text_logs_carry_the_id_and_errors_keep_theirs(recording_engine, logs):
    buffer, config = logs("text")
    with served(make_app(recording_engine.url), config) as base:
        r = httpx.get(f"{base}/boom", headers={"X-Request-Id": "rid-boom"})
        assert r.status_code == 500 and r.headers["x-request-id"] == "rid-boom"
        r = httpx.post(f"{base}/work/t", headers={"X-Request-Id": "rid-text"})
        assert r.status_code == 200
        time.sleep(0.2)
    text = buffer.getvalue()
    assert re.search(r"^\S+ \S+ ERROR bioinstruct.service \[rid-boom\] unhandled error on GET /boom$",
                     text, re.M)
    assert "RuntimeError: an unexpected bug" in text  # the traceback follows its line
    assert re.search(r"INFO bioinstruct.service \[rid-text\] work on t starts$", text, re.M)
    assert re.search(r"INFO uvicorn.access \[rid-text\] .*\"POST /work/t HTTP/1.1\" 200", text)
    with pytest.raises(json.JSONDecodeError):
        json.loads(text.splitlines()[0])


def test_log_format_setting():
    assert ObservabilitySettings().log_format == "text"
    assert ObservabilitySettings(log_format="json").log_format == "json"
    formatter = logging_config("info", "json")["formatters"]["default"]
    assert formatter == {"()": "bioinstruct.service.observability.JsonFormatter"}


def test_bad_log_format_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("BIOINSTRUCT_LOG_FORMAT", "xml")
    observability_settings.cache_clear()
    try:
        with pytest.raises(ObservabilityError,
                           match="BIOINSTRUCT_LOG_FORMAT: Input should be 'text' or 'json'"):
            observability_settings()
    finally:
        observability_settings.cache_clear()


# ---- traces ------------------------------------------------------------------------------------

@pytest.fixture
def spans():
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    provider = TracerProvider()
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider, exporter
    provider.shutdown()


def _traceparent(headers: dict[str, str]) -> tuple[str, str]:
    version, trace_id, span_id, flags = headers["traceparent"].split("-")
    assert version == "00" and flags == "01"
    return trace_id, span_id


def test_traces_gateway_to_engine(recording_engine, spans):
    from opentelemetry.trace import SpanKind, StatusCode

    provider, exporter = spans
    tracing = build_tracing(ObservabilitySettings(), provider)
    caller_trace, caller_span = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    with TestClient(make_app(recording_engine.url, tracing)) as client:
        r = client.post("/work/x", headers={"traceparent": f"00-{caller_trace}-{caller_span}-01",
                                            "X-Request-Id": "rid-trace"})
        assert r.status_code == 200
    finished = exporter.get_finished_spans()
    by_name = {s.name: s for s in finished}
    assert set(by_name) == {"POST /work/{item}", "engine POST /v1/completions",
                            "engine POST /v1/chat/completions"}, list(by_name)
    server = by_name["POST /work/{item}"]
    assert server.kind == SpanKind.SERVER
    assert f"{server.context.trace_id:032x}" == caller_trace  # continues the caller's trace
    assert f"{server.parent.span_id:016x}" == caller_span
    assert server.attributes["http.route"] == "/work/{item}"
    assert server.attributes["http.response.status_code"] == 200
    assert server.attributes["bioinstruct.request_id"] == "rid-trace"
    sent = {path: headers for path, headers in recording_engine.calls}
    for path in ("/v1/completions", "/v1/chat/completions"):
        span = by_name[f"engine POST {path}"]
        assert span.kind == SpanKind.CLIENT
        assert span.parent.span_id == server.context.span_id
        assert span.attributes["http.response.status_code"] == 200
        assert span.attributes["url.full"] == recording_engine.url + path
        assert span.status.status_code != StatusCode.ERROR
        # The engine got this span as its parent: vLLM continues the trace from here.
        assert _traceparent(sent[path]) == (caller_trace, f"{span.context.span_id:016x}")
        assert sent[path]["x-request-id"] == "rid-trace"
    stream = by_name["engine POST /v1/chat/completions"]
    assert stream.end_time >= by_name["engine POST /v1/completions"].end_time  # ended with the stream


def test_probes_and_scrapes_are_not_traced(recording_engine, spans):
    provider, exporter = spans
    app = make_app(recording_engine.url, build_tracing(ObservabilitySettings(), provider))

    @app.get("/health/ready")
    async def ready():
        return {"status": "ready"}

    with TestClient(app) as client:
        r = client.get("/health/ready")
        assert r.status_code == 200 and r.headers["x-request-id"]  # still an id, no span
        assert client.post("/work/x").status_code == 200
    assert "GET /health/ready" not in {s.name for s in exporter.get_finished_spans()}
    assert "POST /work/{item}" in {s.name for s in exporter.get_finished_spans()}


def test_failed_engine_call_marks_both_spans(recording_engine, spans):
    from opentelemetry.trace import StatusCode

    provider, exporter = spans
    app = make_app(recording_engine.url, build_tracing(ObservabilitySettings(), provider))
    with TestClient(app) as client:
        assert client.post("/fail").status_code == 503
    by_name = {s.name: s for s in exporter.get_finished_spans()}
    assert by_name["engine POST /fail"].status.status_code == StatusCode.ERROR
    assert by_name["engine POST /fail"].attributes["http.response.status_code"] == 500
    assert by_name["POST /fail"].status.status_code == StatusCode.ERROR
    assert by_name["POST /fail"].attributes["http.response.status_code"] == 503


def test_no_trace_headers_when_tracing_is_off(recording_engine):
    with TestClient(make_app(recording_engine.url)) as client:
        caller = "00-" + "1" * 32 + "-" + "2" * 16 + "-01"
        assert client.post("/work/x", headers={"traceparent": caller}).is_success
    calls = recording_engine.calls
    assert calls and all("traceparent" not in h and h["x-request-id"] for _, h in calls)
    assert build_tracing(ObservabilitySettings(otel_enabled=False)) is None


class _Collector:
    """A loopback OTLP/HTTP receiver: keeps every ExportTraceServiceRequest posted to /v1/traces."""

    def __init__(self) -> None:
        from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
            ExportTraceServiceRequest,
        )

        self.requests: list[Any] = []
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["content-length"]))
                if self.headers.get("content-encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                collector.requests.append((self.path, request))
                self.send_response(200)
                self.send_header("content-type", "application/x-protobuf")
                self.send_header("content-length", "0")
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"


def test_otlp_export_reaches_a_collector(monkeypatch):
    collector = _Collector()
    try:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.url)
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        monkeypatch.setenv("OTEL_SERVICE_NAME", "bio-test-gateway")
        tracing = build_tracing(ObservabilitySettings(otel_enabled=True))
        with tracing.tracer.start_as_current_span("exported span"):
            pass
        tracing.shutdown()  # flushes the batch
        assert [path for path, _ in collector.requests] == ["/v1/traces"]
        (resource_spans,) = collector.requests[0][1].resource_spans
        attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
        assert attrs["service.name"] == "bio-test-gateway"
        names = [s.name for scope in resource_spans.scope_spans for s in scope.spans]
        assert names == ["exported span"]
    finally:
        collector.server.shutdown()
        collector.server.server_close()


def test_otlp_protocols(monkeypatch):
    from bioinstruct.service import observability

    monkeypatch.setenv("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    assert "grpc" in type(observability._otlp_exporter()).__module__
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")
    with pytest.raises(ObservabilityError, match="use grpc or http/protobuf"):
        observability._otlp_exporter()


def test_tracing_without_the_otel_extra_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "opentelemetry.sdk.trace", None)  # as if not installed
    with pytest.raises(ObservabilityError, match=r"pip install 'bioinstruct\[otel\]'"):
        build_tracing(ObservabilitySettings(otel_enabled=True))


# ---- PromQL of the dashboard and the alert rules ------------------------------------------------

# Metrics a rule may read that come from a standard exporter, not the gateway; DEPLOY.md says so.
EXTERNAL_METRICS = {"kube_pod_status_ready": "kube-state-metrics"}
# Labels Prometheus (the Operator's ServiceMonitor) adds to every scraped series.
TARGET_LABELS = {"namespace", "job", "pod", "instance", "service", "endpoint", "container"}


def exported_metrics() -> dict[str, set[str] | None]:
    """Every series name /metrics can carry -> its label names (None where not knowable)."""
    from bioinstruct.service.metrics import Metrics

    registry = Metrics().registry
    labels_of = {}
    for collector, names in registry._collector_to_names.items():
        for name in names:
            # Metric objects know their label names; a custom collector may not (None: unchecked).
            labelnames = getattr(collector, "_labelnames", None)
            labels_of[name] = set(labelnames) if labelnames is not None else None
    suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
                "summary": ("", "_count", "_sum", "_created"), "info": ("_info",),
                "gaugehistogram": ("_bucket", "_gcount", "_gsum")}
    out: dict[str, set[str] | None] = {}
    for family in registry.collect():
        for suffix in suffixes.get(family.type, ("",)):
            name = family.name + suffix
            known = labels_of.get(name, labels_of.get(family.name))
            extra = {"le"} if suffix == "_bucket" else set()
            sample_labels = {k for s in family.samples if s.name == name for k in s.labels}
            unknown = known is None and not sample_labels
            out[name] = None if unknown else (known or set()) | sample_labels | extra
    # The model-server protocol's vllm:* families appear once the engine has been read (at scrape).
    from bioinstruct.service.model_server_protocol import FAMILY_LABELS

    for name, labels in FAMILY_LABELS.items():
        out.setdefault(name, labels)
    return out


def _grafana_to_promql(expr: str) -> str:
    return expr.replace("$__rate_interval", "5m").replace("$__interval", "1m").replace("$__range", "1h")


def check_promql(expr: str, exported: dict[str, set[str] | None]) -> list[str]:
    """Problems with one expression: a parse error, a metric the service does not export, a
    selector without a metric name, a label the metric does not have."""
    try:
        ast = promql_parser.parse(_grafana_to_promql(expr))
    except Exception as exc:  # the parser's own error type
        return [f"does not parse: {exc}"]
    problems: list[str] = []

    def visit(node):
        if isinstance(node, promql_parser.VectorSelector):
            name = node.name
            if not name:
                problems.append("a selector without a metric name")
                return
            if name in EXTERNAL_METRICS:
                return
            if name not in exported:
                problems.append(f"metric {name} is not exported by the gateway")
                return
            labels = exported[name]
            for m in node.matchers.matchers:
                if labels is not None and m.name not in labels | TARGET_LABELS:
                    problems.append(f"{name} has no label {m.name!r}")

    promql_parser.walk(ast, visit)
    return problems


@pytest.fixture(scope="module")
def monitoring_render(helm) -> list[dict]:
    return render(helm, [CHART / "examples" / "values-inferencepool.yaml"])


def _rules(docs: list[dict]) -> list[dict]:
    (rule,) = by_kind(docs, "PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def _dashboard_queries(dashboard: dict) -> list[tuple[str, str]]:
    """(where, PromQL) of every panel target and every variable's label_values() selector."""
    out = [(f"panel {p['title']!r}", t["expr"]) for p in dashboard["panels"] for t in p.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", var["query"]["query"])
            assert m, var["query"]
            out.append((f"variable {var['name']}", m.group(1)))
    return out


def test_checker_catches_unknown_metrics_labels_and_syntax():
    exported = exported_metrics()
    assert check_promql("sum(rate(bioinstruct_requests_total[5m]))", exported) == []
    assert check_promql("rate(bioinstruct_nope_total[5m])", exported) == \
        ["metric bioinstruct_nope_total is not exported by the gateway"]
    assert check_promql("bioinstruct_requests_total{adaptor=\"qa\"}", exported) == \
        ["bioinstruct_requests_total has no label 'adaptor'"]
    assert check_promql("bioinstruct_requests", exported)  # a counter's series end in _total
    assert check_promql("sum(rate(bioinstruct_requests_total[5m]", exported)[0].startswith("does not parse")
    assert check_promql('{__name__="bioinstruct_engine_up"}', exported) == \
        ["a selector without a metric name"]


def test_alert_rules_name_only_exported_metrics(monitoring_render):
    exported = exported_metrics()
    rules = _rules(monitoring_render)
    assert rules
    problems = {r["alert"]: check_promql(r["expr"], exported) for r in rules}
    assert not any(problems.values()), problems


def test_alert_rules_cover_what_the_issue_asks(monitoring_render):
    rules = {r["alert"]: r for r in _rules(monitoring_render)}
    assert {"BioInstructEngineDown", "BioInstructNotReady", "BioInstructErrorRatioHigh",
            "BioInstructQueueSaturated", "BioInstructRegistryUnreadable"} <= set(rules)
    values = yaml.safe_load((CHART / "examples" / "values-inferencepool.yaml").read_text())
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("critical", "warning")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert 'namespace="ml"' in rule["expr"]  # this release's series only
    # Thresholds follow the values: the queue bound is the gateway's own maxQueue.
    max_queue = values.get("gateway", {}).get("maxQueue", 256)
    assert f"/ {max_queue} > 0.8" in rules["BioInstructQueueSaturated"]["expr"]
    assert "> 0.05" in rules["BioInstructErrorRatioHigh"]["expr"]
    assert "> 120" in rules["BioInstructRegistryUnreadable"]["expr"]


def test_dashboard_queries_name_only_exported_metrics(monitoring_render):
    (cm,) = [c for c in by_kind(monitoring_render, "ConfigMap")
             if c["metadata"]["name"].endswith("-dashboard")]
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    dashboard = json.loads(cm["data"]["bioinstruct.json"])
    assert dashboard == json.loads(DASHBOARD.read_text())
    exported = exported_metrics()
    queries = _dashboard_queries(dashboard)
    assert len(queries) >= 20
    problems = {where: check_promql(expr, exported) for where, expr in queries}
    assert not {k: v for k, v in problems.items() if v}, problems


def test_dashboard_shape_and_panels_asked_for():
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for p in dashboard["panels"] if p["type"] != "row"]
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for p in panels:
        assert p["datasource"]["uid"] == "${datasource}", p["title"]  # no installation's uid baked in
        assert p["description"].endswith("?"), p["title"]  # the question the panel answers
        assert p["targets"], p["title"]
    text = " ".join(t["expr"] for p in panels for t in p["targets"])
    for metric in ("bioinstruct_requests_total", "bioinstruct_request_seconds_bucket",
                   "bioinstruct_time_to_first_token_seconds_bucket", "bioinstruct_tokens_total",
                   "bioinstruct_errors_total", "bioinstruct_queued_requests", "bioinstruct_adapter_resident",
                   "bioinstruct_adapter_swaps_total", "bioinstruct_engine_restarts_total",
                   "bioinstruct_alias_requests_total", "vllm:num_requests_waiting",
                   "vllm:kv_cache_usage_perc"):
        assert metric in text, metric
    for q in ("0.5", "0.9", "0.99"):
        assert f"histogram_quantile({q}, " in text


def test_dashboard_and_rules_off_by_default(helm):
    docs = render(helm)
    assert not by_kind(docs, "PrometheusRule")
    assert not [c for c in by_kind(docs, "ConfigMap") if c["metadata"]["name"].endswith("-dashboard")]


def test_deploy_doc_lists_every_panel_and_alert(monitoring_render):
    text = DEPLOY_DOC.read_text()
    dashboard = json.loads(DASHBOARD.read_text())
    for p in dashboard["panels"]:
        if p["type"] != "row":
            assert f"| {p['title']} |" in text, f"DEPLOY.md does not list panel {p['title']!r}"
    for rule in _rules(monitoring_render):
        assert f"`{rule['alert']}`" in text, f"DEPLOY.md does not list alert {rule['alert']}"
    for name, exporter in EXTERNAL_METRICS.items():
        assert name in text and exporter in text
