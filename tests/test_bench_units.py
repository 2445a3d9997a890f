"""The benchmark suite's own parts, without an engine: its requests go through eval's load client
(against a loopback server here), and every comparison's report has one shape."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bioinstruct.bench import traffic
from bioinstruct.bench.report import Comparison, document, target
from bioinstruct.bench.stats import paired_ratio, summary
from bioinstruct.eval.provenance import current_command


class Completions:
    """POST /v1/completions like the gateway's /v1: usage, model, X-BioInstruct-Latency-Ms; the
    model "refuse" gets a 429. Counts requests in flight."""

    def __init__(self, delay_s: float = 0.05) -> None:
        self.in_flight = self.max_in_flight = 0
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:
                pass

            def do_POST(self) -> None:  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with server.lock:
                    server.in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server.in_flight)
                time.sleep(delay_s)
                with server.lock:
                    server.in_flight -= 1
                if body["model"] == "refuse":
                    status, out = 429, {"error": {"message": "too many requests", "type": "rate_limit_error"}}
                else:
                    status = 200
                    out = {"model": body["model"],
                           "choices": [{"index": 0, "text": "x" * body["max_tokens"]}],
                           "usage": {"prompt_tokens": 5, "completion_tokens": body["max_tokens"]}}
                data = json.dumps(out).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.send_header("X-BioInstruct-Latency-Ms", "12.5")
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self) -> Completions:
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_closed_loop_keeps_concurrency_and_reads_the_gateway_latency_header():
    bodies = [{"model": f"m{i % 2}", "prompt": "p", "max_tokens": 4} for i in range(10)]
    done = []
    with Completions() as server:
        records, duration = asyncio.run(traffic.closed_loop(f"{server.url}/v1/completions", bodies, 3,
                                                            on_done=lambda: done.append(1)))
    assert server.max_in_flight == 3 and len(done) == 10
    assert [r.served_model for r in records] == [b["model"] for b in bodies]  # in the order sent
    assert all(r.ok and r.server_latency_ms == 12.5 and r.latency_ms >= 50 for r in records)
    st = traffic.level_stats(records, 3, duration)
    assert (st.completed, st.failed, st.mean_out_tokens) == (10, 0, 4.0)
    assert st.out_tok_per_s == pytest.approx(40 / duration) and 0.15 < duration < 2
    assert st.p50_ms is not None and st.p50_ms <= st.p99_ms


def test_a_refusal_is_counted_not_retried():
    with Completions(delay_s=0) as server:
        records, duration = asyncio.run(traffic.closed_loop(
            f"{server.url}/v1/completions", [{"model": "refuse", "prompt": "p", "max_tokens": 1}] * 2, 1))
        with pytest.raises(RuntimeError, match="warm-up requests .* failed: .*429"):
            traffic.warm(server.url, ["ok", "refuse"], "p")
    assert [(r.ok, r.status, r.attempts) for r in records] == [(False, 429, 1)] * 2
    st = traffic.level_stats(records, 1, duration)
    assert st.failed == 2 and st.req_per_s == 0
    assert list(st.errors) == ["429 HTTP 429: rate_limit_error: too many requests"]


def test_targets_and_the_report_shape():
    rep = {"command": "bioinstruct bench x", "plots": ["x.png"],
           "machine": {"cores": 2, "cpu": "cpu", "memory_gib": 24, "versions": {"vllm": "0.32.0"},
                       "base_model": "m", "dtype": "float32", "loadavg_start": [1.0], "loadavg_end": [2.0]},
           "targets": [target("fast enough", 1.2, at_least=1.5),
                       target("small enough", 0.9, at_most=1.0),
                       target("nothing measured", None, at_least=0),
                       target("custom", 3.0, met=True, measured="3.00x (note)")]}
    assert [t["met"] for t in rep["targets"]] == [False, True, False, True]
    md = document("Title", rep, ["what ran"], ["| table |"])
    assert md.startswith("# Title\n\n- command: `bioinstruct bench x`\n- machine: 2 cores (cpu)")
    assert "- what ran\n\n| table |\n\nTargets:\n" in md
    assert "- NOT MET: fast enough — measured 1.200\n- MET: small enough — measured 0.900\n" in md
    assert "- NOT MET: nothing measured — measured n/a\n- MET: custom — measured 3.00x (note)" in md
    assert md.endswith("![x.png](x.png)\n")


def test_paired_ratio_pairs_within_a_repeat():
    runs = [{"repeat": 0, "way": "a", "t": 2.0}, {"repeat": 0, "way": "b", "t": 1.0},
            {"repeat": 1, "way": "a", "t": 9.0}, {"repeat": 1, "way": "b", "t": 3.0},
            {"repeat": 2, "way": "a", "t": 5.0}]  # no b in repeat 2: not paired
    s = paired_ratio(runs, "t", "way", "a", "b")
    assert s["values"] == [2.0, 3.0] and s["median"] == 2.5 and s["n"] == 2
    assert summary([None]) == {"median": None, "min": None, "max": None, "n": 0, "values": []}


def test_comparison_writes_json_and_markdown_with_machine_and_command(tmp_path, monkeypatch):
    for key in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "VLLM_NO_USAGE_STATS",
                "DO_NOT_TRACK", "TOKENIZERS_PARALLELISM"):
        monkeypatch.delenv(key, raising=False)  # Comparison sets them: undone after the test
    monkeypatch.setattr(sys, "argv", ["/venv/bin/bioinstruct", "bench", "demo", "--repeats", "2"])
    run = Comparison("demo", tmp_path / "out", "demo comparison")
    assert run.logs == tmp_path / "out" / "logs" and os.environ["HF_HUB_OFFLINE"] == "1"

    def plot(out, rep):
        (out / "demo.png").write_bytes(b"png")
        return ["demo.png"]

    out = run.finish({"targets": [target("t", 1.0, at_least=1)]},
                     lambda rep: document("Demo", rep, [], []), plot)
    saved = json.loads((out / "demo.json").read_text())
    assert saved["command"] == "bioinstruct bench demo --repeats 2" and saved["plots"] == ["demo.png"]
    assert saved["machine"]["cores"] == os.cpu_count() and "loadavg_end" in saved["machine"]
    assert "- MET: t — measured 1.000" in (out / "demo.md").read_text()


def test_current_command_names_what_a_reader_types(monkeypatch):
    assert current_command(["/x/.venv/bin/bioinstruct", "eval", "--task", "a b"]) == \
        "bioinstruct eval --task 'a b'"
    main = types.SimpleNamespace(__spec__=types.SimpleNamespace(name="bioinstruct.bench.serving"))
    monkeypatch.setitem(sys.modules, "__main__", main)
    assert current_command(["/work/main/bench/serving.py", "--repeats", "2"]) == \
        "python -m bioinstruct.bench.serving --repeats 2"


def test_stop_group_takes_the_whole_group_even_one_that_ignores_sigterm(tmp_path):
    from bioinstruct.bench.processes import spawn, stop_group

    # A leader that ignores SIGTERM, with a child of its own in the same group.
    pid_file = tmp_path / "child.pid"
    proc = spawn(["sh", "-c", f"trap '' TERM; sleep 60 & echo $! > {pid_file}; wait"], tmp_path / "log.txt")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (pid_file.is_file() and pid_file.read_text().strip()):
        time.sleep(0.05)
    child = int(pid_file.read_text())
    t0 = time.monotonic()
    stop_group(proc, grace=0.5)
    assert proc.poll() is not None and time.monotonic() - t0 < 5

    def alive(pid: int) -> bool:
        try:
            state = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[0]
        except OSError:
            return False
        return state != "Z"

    deadline = time.monotonic() + 5
    while alive(child) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not alive(child)
