"""A stand-in for vLLM's OpenAI server, for tests whose point is not the engine.

Multi-replica tests (the registry on an object store, canary splits, alias moves under
load) need several gateways at once; several real CPU engines do not fit on this machine's
two cores beside each other. This fake answers what the gateway asks of an engine —
/health, /v1/models, runtime LoRA load/unload, /v1/completions, /metrics — and says in
each completion which model (adapter version) served it. It claims nothing about text.

    python -m tests.fake_engine --port 8123
"""

from __future__ import annotations

import argparse
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeEngine:
    def __init__(self, base_name: str = "base", delay_s: float = 0.0) -> None:
        self.base_name = base_name
        self.delay_s = delay_s
        self.loras: dict[str, str] = {}  # name -> path
        self.completions: dict[str, int] = {}  # model -> requests served
        self.load_calls: list[str] = []
        self.lock = threading.Lock()

    def handle(self, method: str, path: str, body: dict) -> tuple[int, dict | str]:
        if method == "GET" and path == "/health":
            return 200, {}
        if method == "GET" and path == "/v1/models":
            data = [{"id": self.base_name, "object": "model", "root": "/model", "parent": None}]
            with self.lock:
                data += [{"id": n, "object": "model", "root": p, "parent": self.base_name}
                         for n, p in self.loras.items()]
            return 200, {"object": "list", "data": data}
        if method == "GET" and path == "/metrics":
            with self.lock:
                running = ",".join(self.loras)
            return 200, ("# TYPE vllm:num_requests_running gauge\nvllm:num_requests_running{model_name=\"base\"} 0.0\n"
                         "# TYPE vllm:num_requests_waiting gauge\nvllm:num_requests_waiting{model_name=\"base\"} 0.0\n"
                         "# TYPE vllm:kv_cache_usage_perc gauge\nvllm:kv_cache_usage_perc{model_name=\"base\"} 0.0\n"
                         "# TYPE vllm:lora_requests_info gauge\n"
                         f"vllm:lora_requests_info{{max_lora=\"4\",running_lora_adapters=\"{running}\","
                         f"waiting_lora_adapters=\"\"}} {time.time()}\n")
        if method == "POST" and path == "/v1/load_lora_adapter":
            with self.lock:
                if body["lora_name"] in self.loras:
                    return 400, {"error": {
                        "message": f"The lora adapter '{body['lora_name']}' has already been loaded."}}
                self.loras[body["lora_name"]] = body["lora_path"]
                self.load_calls.append(body["lora_name"])
            return 200, "Success"
        if method == "POST" and path == "/v1/unload_lora_adapter":
            with self.lock:
                if self.loras.pop(body["lora_name"], None) is None:
                    return 404, {"error": {"message": f"The lora adapter '{body['lora_name']}' cannot be found."}}
            return 200, "Success"
        if method == "POST" and path == "/v1/completions":
            model = body.get("model")
            with self.lock:
                known = model == self.base_name or model in self.loras
                if known:
                    self.completions[model] = self.completions.get(model, 0) + 1
            if not known:
                return 404, {"error": {"message": f"The model `{model}` does not exist.", "type": "NotFoundError",
                                       "code": 404}}
            if self.delay_s:
                time.sleep(self.delay_s)
            prompt = body.get("prompt")
            n_prompt = len(prompt) if isinstance(prompt, list) else len(str(prompt).split())
            return 200, {"id": "cmpl-fake", "object": "text_completion", "created": int(time.time()), "model": model,
                         "choices": [{"index": 0, "text": f" served-by {model}", "finish_reason": "length",
                                      "logprobs": None}],
                         "usage": {"prompt_tokens": n_prompt, "completion_tokens": 1, "total_tokens": n_prompt + 1}}
        return 404, {"error": {"message": f"no route {method} {path}"}}


class QuietHandler(BaseHTTPRequestHandler):
    """HTTP/1.1 keep-alive, no access log, and one way to answer (for every stand-in server)."""

    protocol_version = "HTTP/1.1"

    def send(self, status: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def serve(engine: FakeEngine, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    class Handler(QuietHandler):
        def _reply(self, method: str) -> None:
            length = int(self.headers.get("content-length") or 0)
            raw = self.rfile.read(length) if length else b""
            body = json.loads(raw) if raw else {}
            status, payload = engine.handle(method, self.path.split("?")[0], body)
            if isinstance(payload, str):
                self.send(status, payload.encode(), "text/plain")
            else:
                self.send(status, json.dumps(payload).encode())

        def do_GET(self) -> None:  # noqa: N802
            self._reply("GET")

        def do_POST(self) -> None:  # noqa: N802
            self._reply("POST")

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    serve(FakeEngine(delay_s=args.delay), args.port)
    threading.Event().wait()
