"""Run every docs/API.md example for real against a running gateway and write the page.

    BIOINSTRUCT_ADMIN_TOKEN=... .venv/bin/python scripts/api_examples.py \\
        --base-url http://127.0.0.1:8000 --adapter-dir PUBLISH_ROOT/docs-qa

The gateway should serve the shipped adapters (`bioinstruct serve` on a fresh registry) and
`--adapter-dir` be a copy of `adapters/qa/` under its publish root (the admin examples publish
it as `docs-qa`). Each example is a curl command and a Python snippet, and the page shows
exactly the text that ran: curl through bash with `BASE` and `ADMIN_TOKEN` in the
environment, Python with this interpreter reading the same variables. The response shown is
curl's, long fields shortened and local paths made relative. tests/test_docs_examples.py
runs the page again against a live gateway.
"""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import httpx
import typer

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_BASE = "http://127.0.0.1:8000"
# The page's first block: what a reader sets once. Curl lines and Python snippets read these.
SETUP = f"""export BASE={DEFAULT_BASE}
export ADMIN_TOKEN="$BIOINSTRUCT_ADMIN_TOKEN"  # the token the gateway was started with"""
PY_BASE = f'BASE = os.environ.get("BASE", "{DEFAULT_BASE}")'
PY_ADMIN = 'ADMIN = {"authorization": f"Bearer {os.environ[\'ADMIN_TOKEN\']}"}'


def shorten(value, limit: int = 300, items: int = 8, depth: int | None = None):
    """Long strings cut, long lists cut after `items`, dicts deeper than `depth` shown as "{…}"."""
    if isinstance(value, str) and len(value) > limit:
        return value[:limit] + "…"
    if isinstance(value, list):
        kept = [shorten(v, limit, items, depth) for v in value[:items]]
        return kept + (["…"] if len(value) > items else [])
    if isinstance(value, dict):
        if depth is not None and depth <= 0:
            return "{…}"
        below = None if depth is None else depth - 1
        return {k: shorten(v, limit, items, below) for k, v in value.items()}
    return value


def json_body(body: dict) -> str:
    """A JSON body in single quotes for the shell: on one line when short, else one key a line."""
    one = json.dumps(body, ensure_ascii=False)
    assert "'" not in one, "a body with a single quote would need shell escaping"
    if len(one) <= 72:
        return f"'{one}'"
    keys = ",\n".join(f"    {json.dumps(k)}: {json.dumps(v, ensure_ascii=False)}" for k, v in body.items())
    return "'{\n" + keys + "\n  }'"


def curl(method: str, path: str, body: dict | None = None, *, admin: bool = False,
         stream: bool = False) -> str:
    """The curl line as the page shows it (and as bash runs it): "$BASE" and "$ADMIN_TOKEN" expand."""
    parts = ["curl", "-sN" if stream else "-s", "-X", method, f'"$BASE{path}"']
    if admin:
        parts += ["-H", '"authorization: Bearer $ADMIN_TOKEN"']
    line = " ".join(parts)
    if body is not None:
        line += " \\\n  -H 'content-type: application/json' -d " + json_body(body)
    return line


def py_literal(value) -> str:
    """A Python literal for a JSON-like value, double-quoted like the JSON beside it; a dict that
    does not fit one line gets one key a line."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        same = ast.literal_eval(text) == value
    except (ValueError, SyntaxError):  # true/false/null
        same = False
    if not same:
        text = repr(value)
    if isinstance(value, dict) and len(text) > 80:
        return "{\n" + "".join(f"    {json.dumps(k)}: {py_literal(v)},\n" for k, v in value.items()) + "}"
    return text


def python(code: str, *, admin: bool = False, **literals) -> str:
    """A snippet that runs as it is: after its imports, BASE (and the admin header) from the
    environment; each @name@ in it becomes the literal of literals[name]."""
    code = textwrap.dedent(code).strip()
    for name, value in literals.items():
        code = code.replace(f"@{name}@", py_literal(value))
    lines = code.splitlines()
    n = next((i for i, line in enumerate(lines) if not line.startswith(("import ", "from "))), len(lines))
    return "\n".join(["import os", *lines[:n], "", PY_BASE, *([PY_ADMIN] if admin else []), *lines[n:]])


def redactor(paths: dict[Path, str]):
    """Replace absolute local paths in shown text: each folder by its label (the checkout by nothing)."""
    pairs = sorted(((str(p.resolve()), label) for p, label in paths.items()), key=lambda x: -len(x[0]))

    def redact(text: str) -> str:
        for path, label in pairs:
            text = text.replace(path + "/", label + "/" if label else "").replace(path, label or ".")
        return text

    return redact


def _under_publish_root(folder: Path, root: Path) -> str:
    """The admin API takes paths relative to the gateway's publish root (default runs/)."""
    try:
        return str(folder.resolve().relative_to(root.resolve()))
    except ValueError:
        raise typer.BadParameter(f"{folder} is not under the publish root {root}") from None


def main(base_url: str = DEFAULT_BASE, out: Path = ROOT / "docs" / "API.md",
         adapter_dir: Path = typer.Option(..., help="A copy of adapters/qa under the publish root (published "
                                          "as docs-qa)"),
         publish_root: Path = typer.Option(None, help="The gateway's BIOINSTRUCT_PUBLISH_ROOT (default: the "
                                           "variable, else runs/)"),
         registry: str = typer.Option(None, help="The gateway's registry, redacted from the page")) -> None:
    admin_token = os.environ.get("BIOINSTRUCT_ADMIN_TOKEN")
    if not admin_token:
        raise typer.BadParameter("set BIOINSTRUCT_ADMIN_TOKEN to the gateway's admin token")
    publish_root = publish_root or Path(os.environ.get("BIOINSTRUCT_PUBLISH_ROOT") or ROOT / "runs")
    docs_path = _under_publish_root(adapter_dir, publish_root)
    paths = {ROOT: "", publish_root: "<publish root>", Path(tempfile.gettempdir()): "<tmp>"}
    if registry and "://" not in registry:
        paths[Path(registry)] = "<registry>"
    redact = redactor(paths)
    curl_home = Path(tempfile.mkdtemp(prefix="api-examples-curl-"))
    (curl_home / ".curlrc").write_text('write-out = "\\n%{http_code}"\n')  # status after the body
    env = {**os.environ, "BASE": base_url, "ADMIN_TOKEN": admin_token, "CURL_HOME": str(curl_home)}
    sections: list[str] = []

    def run(title: str, command: str, code: str, *, note: str = "", expect: int = 200, items: int = 8,
            depth: int | None = None) -> dict | str:
        started = time.perf_counter()
        proc = subprocess.run(["bash", "-c", command], capture_output=True, text=True, env=env)
        took = time.perf_counter() - started
        text, _, status = proc.stdout.rpartition("\n")
        if proc.returncode != 0 or status != str(expect):
            raise SystemExit(f"curl example for {title}: status {status or proc.returncode}, "
                             f"expected {expect}:"
                             f"\n{command}\n{proc.stderr}{text[:2000]}")
        py = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
        if py.returncode != 0 or not py.stdout.strip():
            raise SystemExit(f"python example for {title} failed:\n{code}\n{py.stderr}")
        try:
            parsed = json.loads(text) if text.strip() else {}
            shown = json.dumps(shorten(parsed, items=items, depth=depth), indent=2, ensure_ascii=False) \
                if text.strip() else "(no body)"
        except json.JSONDecodeError:
            lines = text.strip().splitlines()
            shown = "\n".join(lines[:12] + (["…"] + lines[-4:] if len(lines) > 16 else lines[12:]))
            parsed = text
        printed = redact(" ".join(py.stdout.split()))
        printed = printed if len(printed) <= 120 else printed[:120] + "…"
        sections.append("\n".join([
            f"### {title}", "", *([textwrap.fill(note, 100, break_on_hyphens=False), ""] if note else []),
            "```bash", command, "```", "",
            "```python", code, "```", "",
            f"Response ({status}, {took * 1000:.0f} ms, from the run that wrote this page; "
            f"Python printed `{printed.replace('`', chr(39))}`):", "",
            "```json" if shown.startswith(("{", "[")) else "```", redact(shown), "```", "",
        ]))
        return parsed

    # ---- health ---------------------------------------------------------------------------
    run("Liveness", curl("GET", "/health/live"), python("""
        import httpx
        print(httpx.get(f"{BASE}/health/live").json())
    """))
    run("Readiness", curl("GET", "/health/ready"), python("""
        import httpx
        print(httpx.get(f"{BASE}/health/ready").json()["aliases"])
    """), note="200 when the engine is healthy and every alias is loaded; 503 with `problems` otherwise.")

    # ---- task routes ----------------------------------------------------------------------
    question = {"question": "Does regular aspirin use lower the risk of a first heart attack?",
                "context": ["In a trial of 22,071 physicians, aspirin every other day cut first heart "
                            "attacks by 44%."],
                "options": ["yes", "no", "maybe"]}
    run("/qa with options (log-probability scoring)", curl("POST", "/qa", question), python("""
        import httpx
        body = @question@
        r = httpx.post(f"{BASE}/qa", json=body, timeout=60).json()
        assert r["answer"] in body["options"]
        print(r["answer"], r["adapter"], r["model"])
    """, question=question),
        note="With no `adapter`, /qa uses the `qa` alias. The answer is always one of the options; "
        "`method` says how it was chosen and `scores` gives each option's log-probability. "
        "`method: constrained` decodes under a choice grammar instead; `generate` maps free text to the "
        "nearest option.")
    free = {"question": "What is the first-line drug for type 2 diabetes?", "max_tokens": 40,
            "adapter": "base"}
    run("/qa free answer", curl("POST", "/qa", free), python("""
        import httpx
        body = @free@
        print(httpx.post(f"{BASE}/qa", json=body, timeout=60).json()["answer"][:60])
    """, free=free),
        note="Without `options` the answer is free text (here from the base model: `qa` was trained on "
        "yes/no/maybe questions).")
    text = ("Cisplatin-induced nephrotoxicity was reduced by magnesium supplementation in patients with "
            "ovarian cancer.")
    run("/extract", curl("POST", "/extract", {"text": text, "entity_types": ["Chemical", "Disease"]}),
        python("""
        import httpx
        text = @text@
        r = httpx.post(f"{BASE}/extract", json={"text": text}, timeout=60).json()
        assert all(text[e["start"]:e["end"]] == e["text"] for e in r["entities"])
        print(r["adapter"], [(e["type"], e["text"]) for e in r["entities"]], r["dropped"], "dropped")
    """, text=text),
        note="With no `adapter`, /extract uses the `ie` alias. Every returned entity satisfies "
        "`text[start:end] == entity.text`; mentions the model invented are dropped and counted. "
        "`relations: true` also returns `head | RELATION | tail` triples.")
    gen = {"instruction": "Summarize the consumer health question into one short question.",
           "input": "I have had a dry cough for three weeks since I started lisinopril. "
                    "Could the pill cause it?",
           "max_tokens": 48}
    run("/generate", curl("POST", "/generate", gen), python("""
        import httpx
        body = @gen@
        r = httpx.post(f"{BASE}/generate", json=body, timeout=60).json()
        print(r["adapter"], r["family"], r["text"][:60])
    """, gen=gen),
        note="With no `adapter`, /generate uses the `gen` alias (`auto` picks the alias of the request's "
        "task family instead).")
    streamed = {"instruction": "Summarize the consumer health question into one short question.",
                "input": "My son is 6 and has had a fever of 39 C for two days with a rash on his chest. "
                         "Should he see a doctor?", "max_tokens": 32, "stream": True}
    run("/generate streaming (Server-Sent Events)", curl("POST", "/generate", streamed, stream=True),
        python("""
        import json
        import httpx
        body = @streamed@
        with httpx.stream("POST", f"{BASE}/generate", json=body, timeout=60) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
        print(events[-1]["adapter"], "".join(e.get("text", "") for e in events)[:60])
    """, streamed=streamed),
        note="Events: `{\"text\": ...}` pieces, then `{\"done\": true, \"usage\": ..., \"adapter\", "
        "\"version\"}`, then `[DONE]`.")
    compare = {"route": "qa", "adapters": ["base", "qa"], "request": question}
    run("/compare (one input, several adapters)", curl("POST", "/compare", compare), python("""
        import httpx
        body = {"route": "qa", "adapters": ["base", "qa"],
                "request": {"question": "Is metformin used for diabetes?", "options": ["yes", "no"]}}
        r = httpx.post(f"{BASE}/compare", json=body, timeout=60).json()
        print([(x["adapter"], x["status"], x["response"]["answer"]) for x in r["results"]])
    """))

    # ---- OpenAI-compatible ----------------------------------------------------------------
    run("OpenAI-compatible: list models", curl("GET", "/v1/models"), python("""
        from openai import OpenAI
        client = OpenAI(base_url=f"{BASE}/v1", api_key="unused")
        print([m.id for m in client.models.list()])
    """), note="`base`, every alias (`target`: the version it serves) and every version.", items=6)
    chat = {"model": "base", "messages": [{"role": "user", "content": "What does the pancreas do?"}],
            "max_tokens": 40, "temperature": 0}
    run("OpenAI-compatible: chat completions", curl("POST", "/v1/chat/completions", chat), python("""
        from openai import OpenAI
        client = OpenAI(base_url=f"{BASE}/v1", api_key="unused")
        out = client.chat.completions.create(
            model="base", messages=[{"role": "user", "content": "What does the pancreas do?"}], max_tokens=40,
            temperature=0)
        print(out.model, out.choices[0].message.content[:50])
    """), note="`model` is an alias, a pinned version or `base`; the response names the version that "
        "answered. As in OpenAI's API, `temperature` defaults to 1 on these routes (sampling); the task "
        "routes default to 0.")
    completion = {"model": "base", "prompt": "Aspirin irreversibly inhibits", "max_tokens": 12,
                  "temperature": 0, "stream": True}
    run("OpenAI-compatible: completions, streamed", curl("POST", "/v1/completions", completion, stream=True),
        python("""
        from openai import OpenAI
        client = OpenAI(base_url=f"{BASE}/v1", api_key="unused")
        chunks = client.completions.create(model="base", prompt="Aspirin irreversibly inhibits",
                                           max_tokens=12, temperature=0, stream=True)
        print("".join(c.choices[0].text for c in chunks))
    """))

    # ---- admin ----------------------------------------------------------------------------
    run("List adapters, versions and aliases", curl("GET", "/admin/adapters", admin=True), python("""
        import httpx
        r = httpx.get(f"{BASE}/admin/adapters", headers=ADMIN).json()
        print({a["alias"]: a["target"] for a in r["aliases"]})
    """, admin=True), note="Admin routes take `Authorization: Bearer $ADMIN_TOKEN`. Shown: the first two "
        "versions, aliases and swaps, nested records as `{…}`.", items=2, depth=3)
    docs_qa = {"path": docs_path, "name": "docs-qa", "category": "QA",
               "description": "a copy of the shipped qa adapter, published for these examples"}
    published = run("Publish an adapter version", curl("POST", "/admin/adapters", docs_qa, admin=True),
                    python("""
        import httpx
        r = httpx.get(f"{BASE}/admin/adapters/docs-qa/1", headers=ADMIN).json()
        print(r["ref"], r["manifest"]["rank"], r["aliases"])
    """, admin=True), expect=201, depth=2, note=f"`path` is relative to the publish root "
        f"(BIOINSTRUCT_PUBLISH_ROOT, default `runs/`); here `{docs_path}` is a copy of the shipped "
        "`adapters/qa/`. The version is validated (checksums, base model, rank, safetensors only) before "
        "it is written; add `\"alias\": ...` to point an alias at it at once.")
    ref = published["ref"]
    pinned = {"question": "Is aspirin an NSAID?", "options": ["yes", "no"], "adapter": ref}
    run("Pin a version", curl("POST", "/qa", pinned), python("""
        import httpx
        body = @pinned@
        r = httpx.post(f"{BASE}/qa", json=body, timeout=60).json()
        print(r["model"], r["version"], r["answer"])
    """, pinned=pinned),
        note="`adapter` (or `model` on /v1) may name a version: no alias involved.")
    split = {"weights": {"bioinstruct-qa@1": 90, ref: 10}}
    run("Canary: split an alias between versions by weight", curl("PUT", "/admin/aliases/qa", split,
                                                                  admin=True), python("""
        import collections
        import httpx
        body = {"question": "Is aspirin an NSAID?", "options": ["yes", "no"]}
        served = collections.Counter()
        for user in range(30):  # one session id per user: each always sees the same version
            r = httpx.post(f"{BASE}/qa", json=body, headers={"x-session-id": f"user-{user}"}, timeout=60)
            served[r.json()["model"]] += 1
        print(dict(served))
    """), note="Each request to `qa` goes to one version by weight: at random, or by the `x-session-id` "
        "header when sent (one session always gets the same version while the split stands); weight 0 "
        "drains a version. Every version is validated, loaded and warmed before the alias changes.")
    run("Read an alias", curl("GET", "/admin/aliases/qa", admin=True), python("""
        import httpx
        r = httpx.get(f"{BASE}/admin/aliases/qa", headers=ADMIN).json()
        print(r["generation"], r["weights"], r["serving_split"])
    """, admin=True), note="`generation` counts the alias's changes; `history` holds its earlier routes "
        "(a split written as `ref=weight,...`); `serving`/`serving_split` say what this replica serves now.")
    now = httpx.get(f"{base_url}/admin/aliases/qa", headers={"authorization": f"Bearer {admin_token}"})
    stale = {"weights": {"bioinstruct-qa@1": 75, ref: 25},
             "expected_generation": now.json()["generation"] - 1}
    run("Compare-and-swap: change an alias only if nobody else did",
        curl("PUT", "/admin/aliases/qa", stale, admin=True), python("""
        import httpx
        now = httpx.get(f"{BASE}/admin/aliases/qa", headers=ADMIN).json()["generation"]
        body = {"weights": @stale_weights@, "expected_generation": now}
        r = httpx.put(f"{BASE}/admin/aliases/qa", json=body, headers=ADMIN, timeout=120)
        print(r.status_code, r.json()["generation"], r.json()["weights"])
    """, admin=True, stale_weights=stale["weights"]),
        expect=409, note="With `expected_generation` the change is made only if the alias "
        "is still at that generation (0: it must not exist yet). The curl line sends a stale one and gets "
        "409; the Python snippet reads the alias first and succeeds.")
    run("Promote a canary", curl("POST", "/admin/aliases/qa/promote", admin=True), python("""
        import httpx
        print(httpx.get(f"{BASE}/health/ready").json()["aliases"])
    """), note="All traffic to one version of the split: the newest by default, or send "
        "`{\"target\": \"name@version\"}` (and `expected_generation`, as above).")
    run("Point an alias at a version", curl("PUT", "/admin/aliases/qa", {"target": "bioinstruct-qa@1"},
                                            admin=True), python("""
        import httpx
        print(httpx.get(f"{BASE}/admin/aliases/qa", headers=ADMIN).json()["history"])
    """, admin=True), note="Zero-downtime: the new version is validated, loaded and warmed, then the alias "
        "flips; requests already running finish on the old version, which is then unloaded. "
        "`POST /admin/aliases/qa/rollback` returns to the previous route.")

    # ---- errors and metrics ---------------------------------------------------------------
    run("An error: unknown adapter", curl("POST", "/qa", {"question": "x?", "adapter": "no-such"}), python("""
        from openai import NotFoundError, OpenAI
        client = OpenAI(base_url=f"{BASE}/v1", api_key="unused", max_retries=0)
        try:
            client.chat.completions.create(model="no-such", messages=[{"role": "user", "content": "hi"}])
        except NotFoundError as exc:
            print(exc.status_code)
    """), expect=404, note="Errors are OpenAI-shaped; the official client raises its usual exceptions "
        "(400, 401, 403, 404, 429).")
    run("Prometheus metrics", curl("GET", "/metrics"), python("""
        import httpx
        print(len(httpx.get(f"{BASE}/metrics").text.splitlines()), "lines")
    """))

    header = f"""# API

Every example below was run for real by `scripts/api_examples.py` (which wrote this page) on
{time.strftime('%Y-%m-%d')}, against `bioinstruct serve` on the embedded SmolLM2 model with a fresh
registry, so with the shipped adapters (`qa`, `ie`, `gen`, `all`); responses are the ones it got,
long fields shortened and local paths shown relative to the checkout. `tests/test_docs_examples.py`
runs every command on this page again against a live gateway and checks each status and response shape.

Set two variables once; every curl line and Python snippet below reads them:

```bash
{SETUP}
```

(`make serve` listens on {DEFAULT_BASE}; start it with `BIOINSTRUCT_ADMIN_TOKEN=...` set to
use the admin routes.) The OpenAPI schema is at `$BASE/openapi.json` and interactive docs at `$BASE/docs`.

- `adapter` (task routes) and `model` (OpenAI routes): an alias (`qa`), a pinned version
  (`name@3`), `base`, or `auto` (the adapter of the request's task family).
  Omitted: the route's default alias (`qa` for /qa, `ie` for /extract, `gen` for /generate),
  or the base model while that alias is not published; a named adapter that does not exist is a 404.
- Auth: with `BIOINSTRUCT_API_KEYS` set, send `Authorization: Bearer <key>`; admin routes take
  `Authorization: Bearer $ADMIN_TOKEN` (`BIOINSTRUCT_ADMIN_TOKEN`).
- Errors: `{{"error": {{"message", "type", "param", "code"}}}}` with 400 (fix the request), 401, 403,
  404 (unknown adapter), 409 (conflict with the registry's state), 413, 429 (+ Retry-After),
  503 (engine restarting, + Retry-After).

"""
    text = header + "\n".join(sections)
    if admin_token in text:
        raise SystemExit("the admin token would appear on the page; not written")
    tail = _kept_tail(out)
    out.write_text(text.rstrip("\n") + "\n" + (("\n" + tail) if tail else ""))
    typer.echo(f"wrote {out} ({len(sections)} examples{', kept its Python client section' if tail else ''})")


def _kept_tail(out: Path) -> str:
    """A "## Python client" section at the end of the page is written by hand: keep it."""
    if not out.is_file():
        return ""
    text = out.read_text()
    at = text.find("\n## Python client")
    return text[at + 1:] if at >= 0 else ""


if __name__ == "__main__":
    typer.run(main)
