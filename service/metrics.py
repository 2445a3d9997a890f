"""Prometheus metrics of the gateway (one registry per app, so tests can build several)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from bioinstruct.service.model_server_protocol import ModelServerCollector

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 80, 160)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("bioinstruct_requests_total", "Requests by route, adapter and status",
                                ["route", "adapter", "status"], registry=r)
        self.latency = Histogram("bioinstruct_request_seconds", "End-to-end latency", ["route", "adapter"],
                                 buckets=LATENCY_BUCKETS, registry=r)
        self.ttft = Histogram("bioinstruct_time_to_first_token_seconds", "Streaming: time to first token",
                              ["route", "adapter"], buckets=LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("bioinstruct_tokens_total", "Tokens by direction (in = prompt, out = completion)",
                              ["route", "adapter", "direction"], registry=r)
        self.errors = Counter("bioinstruct_errors_total", "Error responses by route and status",
                              ["route", "status"], registry=r)
        self.inflight = Gauge("bioinstruct_inflight_requests", "Requests holding an engine slot", registry=r)
        self.queued = Gauge("bioinstruct_queued_requests", "Requests waiting for an engine slot", registry=r)
        self.rejected = Counter("bioinstruct_rejected_total", "Requests refused by admission control",
                                ["reason"], registry=r)
        self.swaps = Counter("bioinstruct_adapter_swaps_total", "Alias swaps by result", ["alias", "result"],
                             registry=r)
        self.swap_seconds = Histogram("bioinstruct_adapter_swap_seconds", "Validate+load+warm+flip time",
                                      buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.adapter_resident = Gauge("bioinstruct_adapter_resident",
                                      "1 if this adapter version is loaded in the engine",
                                      ["adapter"], registry=r)
        self.aliases = Gauge("bioinstruct_aliases_serving", "Aliases with a loaded version", registry=r)
        self.unreadable_aliases = Gauge("bioinstruct_registry_unreadable_aliases",
                                        "Alias files in the registry that cannot be read (last good version kept)",
                                        registry=r)
        self.reconcile_failures = Counter("bioinstruct_registry_reconcile_failures_total",
                                          "Registry reads that failed (the replica kept its last good state)",
                                          registry=r)
        self.registry_stale = Gauge("bioinstruct_registry_stale_seconds",
                                    "Seconds since the registry was last read successfully (0 when it reads fine)",
                                    registry=r)
        self.alias_requests = Counter("bioinstruct_alias_requests_total",
                                      "Requests by alias and the version that served them (canary splits)",
                                      ["alias", "version"], registry=r)
        self.adapter_load_seconds = Histogram("bioinstruct_adapter_load_seconds",
                                              "Validate + load + warm of one adapter version (cold start)",
                                              buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30), registry=r)
        self.engine_up = Gauge("bioinstruct_engine_up", "1 when the engine is healthy", registry=r)
        self.engine_restarts = Counter("bioinstruct_engine_restarts_total", "Engine restarts by the gateway",
                                       registry=r)
        # The model-server protocol's vllm:* families, for llm-d's picker (model_server_protocol.py).
        self.protocol = ModelServerCollector()
        r.register(self.protocol)
