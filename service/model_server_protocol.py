"""The model-server protocol on the gateway's own /metrics (what llm-d's Endpoint Picker reads).

A routing layer in front of our pods (Gateway API Inference Extension's InferencePool with
llm-d's picker) scrapes each pod's /metrics and, for engine type vLLM, reads five families
by their exact vLLM names. The engine listens on loopback only (its admin routes must stay
private), so the gateway re-exports them, each family once, with vLLM's types and labels:

- vllm:num_requests_waiting  the engine's queue plus the gateway's own admission queue
                             (requests vLLM cannot see yet are waiting all the same)
- vllm:num_requests_running  the engine's running requests
- vllm:kv_cache_usage_perc   the engine's KV-cache use (0-1)
- vllm:cache_config_info     the engine's cache config labels (block_size, num_gpu_blocks)
- vllm:lora_requests_info    resident adapters under the names a request uses (each
                             version's name@version and every alias routed to it), adapters
                             being loaded for waiting requests, max_lora = how many versions
                             this replica keeps resident plus the extra names listed (the
                             picker counts names against max_lora to find a free slot, and a
                             version listed under its alias too still takes one slot);
                             value = now (the newest series wins)

The engine's text is fetched at scrape time (loopback, ~1 ms) and parsed with
prometheus_client's parser; a family the engine did not report is left out rather than
invented (a false 0 would steer traffic to a replica that cannot take it).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from prometheus_client.core import GaugeMetricFamily
from prometheus_client.parser import text_string_to_metric_families

ENGINE_FAMILIES = ("vllm:num_requests_waiting", "vllm:num_requests_running", "vllm:kv_cache_usage_perc",
                   "vllm:cache_config_info")
REQUIRED_FAMILIES = (*ENGINE_FAMILIES, "vllm:lora_requests_info")
# The label names each family carries (vLLM's engine labels its gauges by model and engine
# index; cache_config_info carries the engine's whole cache config, so its labels vary).
FAMILY_LABELS: dict[str, set[str] | None] = {
    "vllm:num_requests_waiting": {"model_name", "engine"},
    "vllm:num_requests_running": {"model_name", "engine"},
    "vllm:kv_cache_usage_perc": {"model_name", "engine"},
    "vllm:cache_config_info": None,
    "vllm:lora_requests_info": {"max_lora", "running_lora_adapters", "waiting_lora_adapters"},
}
HELP = {
    "vllm:num_requests_waiting": "Requests waiting: the engine's queue plus the gateway's admission queue",
    "vllm:num_requests_running": "Requests running in the engine",
    "vllm:kv_cache_usage_perc": "KV-cache usage (1 = full)",
    "vllm:cache_config_info": "The engine's cache configuration",
    "vllm:lora_requests_info": "Resident and waiting LoRA adapters by the names requests use",
}


@dataclass
class EngineSnapshot:
    """The engine's scheduling series: family -> [(labels, value)]."""

    series: dict[str, list[tuple[dict[str, str], float]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> EngineSnapshot:
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            # The parser strips a gauge's name as is; vLLM's names carry a colon, which it keeps.
            if family.name in ENGINE_FAMILIES:
                out[family.name] = [(dict(s.labels), float(s.value)) for s in family.samples
                                    if s.name == family.name]
        return cls(out)


@dataclass
class LoraState:
    resident: dict[str, list[str]]  # ref -> aliases routed to it (names a request may use)
    loading: dict[str, list[str]]  # ref -> aliases: being loaded for waiting requests
    max_lora: int


def _names(refs: dict[str, list[str]]) -> list[str]:
    names: list[str] = []
    for ref in sorted(refs):
        for name in (*sorted(refs[ref]), ref):
            if name not in names:
                names.append(name)
    return names


class ModelServerCollector:
    """A prometheus_client collector: yields the protocol's families from the last snapshot."""

    def __init__(self) -> None:
        self.snapshot = EngineSnapshot()
        self.gateway_queued = lambda: 0
        self.lora_state: LoraState | None = None

    def collect(self):
        for name in ENGINE_FAMILIES:
            series = self.snapshot.series.get(name)
            if name == "vllm:num_requests_waiting":
                queued = float(self.gateway_queued())
                series = [(labels, value + queued) for labels, value in series] if series else [({}, queued)]
            if not series:
                continue
            labels = sorted({key for labels, _ in series for key in labels})
            family = GaugeMetricFamily(name, HELP[name], labels=labels)
            for series_labels, value in series:
                family.add_metric([series_labels.get(key, "") for key in labels], value)
            yield family
        if self.lora_state is not None:
            family = GaugeMetricFamily("vllm:lora_requests_info", HELP["vllm:lora_requests_info"],
                                       labels=["max_lora", "running_lora_adapters", "waiting_lora_adapters"])
            state = self.lora_state
            running, waiting = _names(state.resident), _names(state.loading)
            extra = len(running) + len(waiting) - len(state.resident) - len(state.loading)
            family.add_metric([str(state.max_lora + extra), ",".join(running), ",".join(waiting)], time.time())
            yield family
