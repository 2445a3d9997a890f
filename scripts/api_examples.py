"""Run every docs/API.md example for real against a running gateway and write the page.

    BIOINSTRUCT_ADMIN_TOKEN=... .venv/bin/python scripts/api_examples.py --base-url http://127.0.0.1:8000

Each example runs twice, as curl and as Python (httpx or the openai client); the page
shows both commands and the real response (long fields shortened).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import typer

ROOT = Path(__file__).resolve().parents[1]


def shorten(value, limit: int = 300):
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    if isinstance(value, list):
        items = [shorten(v, limit) for v in value[:8]]
        return items + (["…"] if len(value) > 8 else [])
    if isinstance(value, dict):
        return {k: shorten(v, limit) for k, v in value.items()}
    return value


def curl_cmd(base: str, method: str, path: str, body: dict | None, token: str | None, stream: bool) -> list[str]:
    cmd = ["curl", "-s" + ("N" if stream else ""), "-X", method, f"{base}{path}"]
    if token:
        cmd += ["-H", f"authorization: Bearer {token}"]
    if body is not None:
        cmd += ["-H", "content-type: application/json", "-d", json.dumps(body)]
    return cmd


def show_curl(cmd: list[str], base: str) -> str:
    parts = [shlex.quote(p) for p in cmd]
    text = " ".join(parts).replace(base, "$BASE")
    return text.replace(os.environ.get("BIOINSTRUCT_ADMIN_TOKEN", "\0"), "$ADMIN_TOKEN")


def _under_publish_root(folder: Path) -> str:
    """The admin API takes paths relative to the gateway's publish root (default runs/)."""
    root = Path(os.environ.get("BIOINSTRUCT_PUBLISH_ROOT") or ROOT / "runs").resolve()
    try:
        return str(folder.resolve().relative_to(root))
    except ValueError:
        raise typer.BadParameter(f"{folder} is not under the publish root {root}") from None


def main(base_url: str = "http://127.0.0.1:8000", out: Path = ROOT / "docs" / "API.md",
         adapter_dir: Path = typer.Option(None, help="A peft LoRA folder under the publish root to publish")) -> None:
    admin = os.environ.get("BIOINSTRUCT_ADMIN_TOKEN")
    if not admin:
        raise typer.BadParameter("set BIOINSTRUCT_ADMIN_TOKEN to the gateway's admin token")
    sections: list[str] = []

    def run(title: str, method: str, path: str, body: dict | None = None, *, python: str,
            token: str | None = None, stream: bool = False, note: str = "") -> dict | str:
        cmd = curl_cmd(base_url, method, path, body, token, stream)
        started = time.perf_counter()
        proc = subprocess.run(cmd + ["-w", "\n%{http_code}"], capture_output=True, text=True, check=True)
        took = time.perf_counter() - started
        text, _, status = proc.stdout.rpartition("\n")
        py = subprocess.run([sys.executable, "-c", python.replace("$BASE", base_url).replace("$ADMIN_TOKEN", admin)],
                            capture_output=True, text=True)
        if py.returncode != 0:
            raise SystemExit(f"python example for {title} failed:\n{py.stderr}")
        try:
            shown = json.dumps(shorten(json.loads(text)), indent=2) if text.strip() else "(no body)"
            parsed = json.loads(text) if text.strip() else {}
        except json.JSONDecodeError:
            lines = text.strip().splitlines()
            shown = "\n".join(lines[:12] + (["…"] + lines[-4:] if len(lines) > 16 else lines[12:]))
            parsed = text
        sections.append("\n".join([
            f"### {title}", "", note, "", "```bash", show_curl(cmd, base_url), "```", "",
            "```python", textwrap.dedent(python).strip().replace(admin, "ADMIN_TOKEN"), "```", "",
            f"Response ({status}, {took * 1000:.0f} ms, from the run that wrote this page; python printed "
            f"`{py.stdout.strip()[:120]}`):", "", "```json" if shown.startswith(("{", "[")) else "```", shown, "```", "",
        ]))
        return parsed

    run("Liveness", "GET", "/health/live", python="import httpx; print(httpx.get('$BASE/health/live').json())")
    run("Readiness", "GET", "/health/ready", python="import httpx; print(httpx.get('$BASE/health/ready').status_code)",
        note="200 when the engine is healthy and every alias is loaded; 503 with `problems` otherwise.")
    pub = None
    if adapter_dir is not None:
        pub = run("Publish an adapter version and point an alias at it", "POST", "/admin/adapters",
                  {"path": _under_publish_root(adapter_dir), "name": "docs-qa", "category": "QA", "alias": "qa"}, token=admin,
                  python="import httpx; r = httpx.get('$BASE/admin/adapters', headers={'authorization': 'Bearer $ADMIN_TOKEN'}); print([v['ref'] for v in r.json()['versions']])",
                  note="`path` is relative to the publish root (BIOINSTRUCT_PUBLISH_ROOT, default `runs/`). The "
                  "version is validated (checksums, base model, rank, safetensors only) before it is written.")
    run("List adapters, versions and aliases", "GET", "/admin/adapters", token=admin,
        python="import httpx; r = httpx.get('$BASE/admin/adapters', headers={'authorization': 'Bearer $ADMIN_TOKEN'}); print(len(r.json()['aliases']), 'aliases')")
    question = {"question": "Does regular aspirin use lower the risk of a first heart attack?",
                "context": ["In a randomized trial of 22,071 physicians, aspirin 325 mg every other day reduced "
                            "the risk of first myocardial infarction by 44%."],
                "options": ["yes", "no", "maybe"]}
    run("/qa with options (log-probability scoring)", "POST", "/qa", {**question, "adapter": "auto"},
        python="""
import httpx
body = {"question": "Does regular aspirin use lower the risk of a first heart attack?",
        "context": ["In a randomized trial of 22,071 physicians, aspirin 325 mg every other day reduced the risk of first myocardial infarction by 44%."],
        "options": ["yes", "no", "maybe"], "adapter": "auto"}
r = httpx.post("$BASE/qa", json=body, timeout=60)
print(r.json()["answer"], r.json()["adapter"])
""", note="The answer is always one of the options; `method` says how it was chosen and `scores` gives each "
        "option's log-probability. `method: constrained` decodes under a choice grammar instead; `generate` maps "
        "free text to the nearest option.")
    run("/qa free answer", "POST", "/qa", {"question": "What is the first-line drug for type 2 diabetes?", "max_tokens": 40, "adapter": "base"},
        python="import httpx; print(httpx.post('$BASE/qa', json={'question': 'What is the first-line drug for type 2 diabetes?', 'max_tokens': 40, 'adapter': 'base'}, timeout=60).json()['answer'][:60])")
    text = "Cisplatin-induced nephrotoxicity was reduced by magnesium supplementation in patients with ovarian cancer."
    run("/extract", "POST", "/extract", {"text": text, "entity_types": ["Chemical", "Disease"]},
        python=f"""
import httpx
text = {text!r}
r = httpx.post("$BASE/extract", json={{"text": text}}, timeout=60).json()
assert all(text[e["start"]:e["end"]] == e["text"] for e in r["entities"])
print(len(r["entities"]), "entities,", r["dropped"], "dropped")
""", note="Every returned entity satisfies `text[start:end] == entity.text`; mentions the model invented are "
        "dropped and counted. `relations: true` also returns `head | RELATION | tail` triples.")
    run("/generate", "POST", "/generate", {"instruction": "Explain in two sentences what a statin does.", "max_tokens": 60},
        python="import httpx; print(httpx.post('$BASE/generate', json={'instruction': 'Explain in two sentences what a statin does.', 'max_tokens': 60}, timeout=60).json()['family'])")
    run("/generate streaming (Server-Sent Events)", "POST", "/generate",
        {"instruction": "List three symptoms of anemia.", "max_tokens": 24, "stream": True}, stream=True,
        python="""
import httpx, json
with httpx.stream("POST", "$BASE/generate", json={"instruction": "List three symptoms of anemia.", "max_tokens": 24, "stream": True}, timeout=60) as r:
    events = [json.loads(l[6:]) for l in r.iter_lines() if l.startswith("data: {")]
print("".join(e.get("text", "") for e in events)[:60])
""", note="Events: `{\"text\": ...}` pieces, then `{\"done\": true, \"usage\": ..., \"adapter\", \"version\"}`, then `[DONE]`.")
    run("/compare (one input, several adapters)", "POST", "/compare",
        {"route": "qa", "adapters": ["base", "qa"] if pub else ["base", "auto"], "request": question},
        python="""
import httpx
body = {"route": "qa", "adapters": ["base", "auto"], "request": {"question": "Is metformin used for diabetes?", "options": ["yes", "no"]}}
print([(x["adapter"], x["status"]) for x in httpx.post("$BASE/compare", json=body, timeout=60).json()["results"]])
""")
    run("OpenAI-compatible: list models", "GET", "/v1/models", python="""
from openai import OpenAI
client = OpenAI(base_url="$BASE/v1", api_key="unused")
print([m.id for m in client.models.list()])
""")
    run("OpenAI-compatible: chat completions", "POST", "/v1/chat/completions",
        {"model": "qa" if pub else "base", "messages": [{"role": "user", "content": "What does the pancreas do?"}], "max_tokens": 40},
        python="""
from openai import OpenAI
client = OpenAI(base_url="$BASE/v1", api_key="unused")
out = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "What does the pancreas do?"}], max_tokens=40)
print(out.model, out.choices[0].message.content[:50])
""")
    run("OpenAI-compatible: completions, streamed", "POST", "/v1/completions",
        {"model": "base", "prompt": "Aspirin irreversibly inhibits", "max_tokens": 12, "stream": True}, stream=True,
        python="""
from openai import OpenAI
client = OpenAI(base_url="$BASE/v1", api_key="unused")
print("".join(c.choices[0].text for c in client.completions.create(model="base", prompt="Aspirin irreversibly inhibits", max_tokens=12, stream=True)))
""")
    if pub:
        ref = pub["ref"]
        run("Pin a version", "POST", "/qa", {**question, "adapter": ref},
            python=f"import httpx; print(httpx.post('$BASE/qa', json={{'question': 'Is aspirin an NSAID?', 'options': ['yes', 'no'], 'adapter': {ref!r}}}, timeout=60).json()['version'])")
        run("Point an alias at a version", "PUT", "/admin/aliases/qa", {"target": ref}, token=admin,
            python="import httpx; print(httpx.get('$BASE/health/ready').json()['aliases'])",
            note="Zero-downtime: the new version is validated, loaded and warmed, then the alias flips; requests "
            "already running finish on the old version, which is then unloaded.")
    run("An error: unknown adapter", "POST", "/qa", {"question": "x?", "adapter": "no-such"},
        python="""
from openai import OpenAI, NotFoundError
client = OpenAI(base_url="$BASE/v1", api_key="unused", max_retries=0)
try:
    client.chat.completions.create(model="no-such", messages=[{"role": "user", "content": "hi"}])
except NotFoundError as exc:
    print(exc.status_code)
""", note="Errors are OpenAI-shaped; the official client raises its usual exceptions (400, 401, 403, 404, 429).")
    run("Prometheus metrics", "GET", "/metrics", python="import httpx; print(len(httpx.get('$BASE/metrics').text.splitlines()), 'lines')")

    header = f"""# API

Every example below was run for real against the gateway on the embedded SmolLM2 model by
`scripts/api_examples.py` (which wrote this page) on {time.strftime('%Y-%m-%d')}; responses are the ones it got,
long fields shortened. `$BASE` is the gateway URL (`make serve`: http://127.0.0.1:8000).
The OpenAPI schema is at `$BASE/openapi.json` and interactive docs at `$BASE/docs`.

- `adapter` (task routes) and `model` (OpenAI routes): an alias (`qa`), a pinned version
  (`name@3`), `base`, or `auto` (the adapter of the request's task family).
  Omitted: the route's default alias (`qa` for /qa, `ie` for /extract, `gen` for /generate),
  or the base model while that alias is not published; a named adapter that does not exist is a 404.
- Auth: with `BIOINSTRUCT_API_KEYS` set, send `Authorization: Bearer <key>`; admin routes take
  `Authorization: Bearer $ADMIN_TOKEN` (`BIOINSTRUCT_ADMIN_TOKEN`).
- Errors: `{{"error": {{"message", "type", "param", "code"}}}}` with 400 (fix the request), 401, 403,
  404 (unknown adapter), 409, 413, 429 (+ Retry-After), 503 (engine restarting, + Retry-After).

"""
    out.write_text(header + "\n".join(sections))
    typer.echo(f"wrote {out} ({len(sections)} examples)")


if __name__ == "__main__":
    typer.run(main)
