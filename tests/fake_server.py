"""A tiny stand-in for an OpenAI-compatible chat endpoint, for tests and dry runs of the loop.

It answers POST /v1/chat/completions with batches of synthetic, varied biomedical-looking
tasks in the numbered format (plus a rejected-by-design task now and then, and a reply cut
by length now and then), and can fail on purpose (429/500) to exercise retries. It claims
nothing about model quality: the real run goes against the service.

    python -m tests.fake_server --port 8765 --delay 0.05
"""

from __future__ import annotations

import argparse
import json
import random
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_WORDS = (
    "aspirin heparin warfarin insulin metformin statin lisinopril amoxicillin ibuprofen cisplatin "
    "tamoxifen albuterol prednisone morphine digoxin furosemide clopidogrel atorvastatin levothyroxine "
    "hypertension diabetes asthma sepsis anemia hepatitis pneumonia melanoma glioma lymphoma leukemia "
    "arrhythmia stroke migraine epilepsy psoriasis arthritis nephropathy neuropathy cirrhosis obesity "
    "kidney liver heart lung brain skin bone blood pancreas thyroid retina colon stomach spleen "
    "patient infant adult elderly nurse clinician pharmacist surgeon cohort trial biopsy dose "
    "mechanism toxicity prognosis diagnosis therapy screening vaccine antibody receptor enzyme protein "
    "gene mutation pathway inflammation infection resistance metabolism clearance absorption"
).split()
_VERBS = ["Explain", "Summarize", "Describe", "List", "Compare", "Identify", "Classify", "Outline",
          "Extract", "Rewrite", "Define", "Name", "Answer"]
_CATEGORIES = ["QA", "IE", "GEN", "OTHER", "question answering", "extraction", ""]


def _task(rng: random.Random, number: int) -> str:
    words = rng.sample(_WORDS, rng.randint(7, 12))
    instruction = f"{rng.choice(_VERBS)} the {' '.join(words)}."
    input_text = rng.choice(["<noinput>", " ".join(rng.sample(_WORDS, 10)) + "."])
    output = " ".join(rng.sample(_WORDS, rng.randint(4, 15))).capitalize() + "."
    category = rng.choice(_CATEGORIES)
    lines = [f"{number}. Instruction: {instruction}", f"Input: {input_text}", f"Output: {output}"]
    if category:
        lines.append(f"Category: {category}")
    return "\n".join(lines)


def make_reply(rng: random.Random, first: int, k: int) -> tuple[str, str]:
    """(content, finish_reason) for a request of k tasks numbered from `first`."""
    parts = ["Here are the new tasks:"]
    for i in range(k):
        roll = rng.random()
        number = first + i
        if roll < 0.08:
            parts.append(f"{number}. Instruction: Look at the image of the {rng.choice(_WORDS)} and describe it.\n"
                         "Input: <noinput>\nOutput: It shows a cell.")
        elif roll < 0.12:
            parts.append(f"{number}. Instruction: {rng.choice(_VERBS)} the {' '.join(rng.sample(_WORDS, 6))}.\n"
                         "Input: <noinput>\nOutput:")
        else:
            parts.append(_task(rng, number))
    finish = "stop"
    if rng.random() < 0.2:  # cut in the middle of one more task
        parts.append(f"{first + k}. Instruction: {rng.choice(_VERBS)} the {' '.join(rng.sample(_WORDS, 8))}.\n"
                     "Input: <noinput>\nOutput: The")
        finish = "length"
    elif rng.random() < 0.3:
        parts.append("I hope these tasks help!")
    return "\n\n".join(parts), finish


class FakeChatServer:
    """Run in a thread: `with FakeChatServer(delay=0.05) as srv: srv.base_url`."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, delay: float = 0.0,
                 fail_every: int = 0, fail_status: int = 500, seed: int = 0,
                 script: list[int | str | tuple[str, str]] | None = None, stall_s: float = 5.0,
                 refuse_seed: bool = False) -> None:
        """script: answers for the first requests, in order: an HTTP status (an error body),
        "stall" (answer only after stall_s, to trip client timeouts), a reply text, or
        (reply text, finish_reason). Then synthetic batches."""
        self.delay = delay
        self.script = list(script or [])
        self.stall_s = stall_s
        self.fail_every = fail_every
        self.fail_status = fail_status
        self.refuse_seed = refuse_seed  # answer 400 to a request that sends `seed`, as our CPU service does
        self.seeded_requests = 0
        self.requests = 0
        self._lock = threading.Lock()
        self._rng = random.Random(seed)
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def _send(self, status: int, body: dict, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if not self.path.endswith("/chat/completions"):
                    self._send(404, {"error": {"message": "not found", "type": "invalid_request_error"}})
                    return
                if "seed" in body:
                    with server._lock:
                        server.seeded_requests += 1
                    if server.refuse_seed:
                        self._send(400, {"error": {"message": "'seed' is not available on this server",
                                                   "type": "invalid_request_error", "param": "seed"}})
                        return
                with server._lock:
                    server.requests += 1
                    count = server.requests
                    rng = random.Random(server._rng.random())
                    step = server.script.pop(0) if server.script else None
                if isinstance(step, int):
                    self._send(step, {"error": {"message": f"scripted {step}", "type": "server_error"}},
                               {"Retry-After": "0"})
                    return
                if step == "stall":
                    time.sleep(server.stall_s)
                    step = None
                if server.fail_every and count % server.fail_every == 0:
                    self._send(server.fail_status, {"error": {"message": "try again", "type": "server_error"}},
                               {"Retry-After": "0"})
                    return
                if server.delay:
                    time.sleep(server.delay)
                prompt = body["messages"][-1]["content"]
                m = re.search(r"Write (\d+) new tasks, numbered (\d+)", prompt)
                k, first = (int(m.group(1)), int(m.group(2))) if m else (5, 4)
                if isinstance(step, tuple):
                    content, finish = step
                elif isinstance(step, str):
                    content, finish = step, "stop"
                else:
                    content, finish = make_reply(rng, first, k)
                self._send(200, {
                    "id": f"chatcmpl-fake-{count}", "object": "chat.completion", "created": int(time.time()),
                    "model": body.get("model", "fake"),
                    "choices": [{"index": 0, "finish_reason": finish,
                                 "message": {"role": "assistant", "content": content}}],
                    "usage": {"prompt_tokens": len(prompt.split()), "completion_tokens": len(content.split()),
                              "total_tokens": len(prompt.split()) + len(content.split())},
                })

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    def start(self) -> FakeChatServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--delay", type=float, default=0.0)
    parser.add_argument("--fail-every", type=int, default=0)
    args = parser.parse_args()
    server = FakeChatServer(args.host, args.port, delay=args.delay, fail_every=args.fail_every)
    print(server.base_url, flush=True)
    server._httpd.serve_forever()


if __name__ == "__main__":
    main()
