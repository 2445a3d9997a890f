"""The docs' commands, run: README's "Try it" and every example in docs/API.md.

The live tests run each command as the page shows it against a gateway on the session engine
with the shipped adapters published into its own, fresh registry (as `bioinstruct serve`
does), and check status and shape: the status the page states, the keys of the response it
shows, entity offsets, answers among the options, the adapter each route picked. Only the
address changes: `localhost:8000` in README, the value of `BASE` in API.md's setup block.
curl prints the status after the body through a `.curlrc` of the test's own (CURL_HOME), so
the commands run unchanged. The static tests need no engine.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.service_helpers import ExtraGateway

ROOT = Path(__file__).resolve().parents[1]
API_MD = ROOT / "docs" / "API.md"
README = ROOT / "README.md"
DOC_BASE = "http://127.0.0.1:8000"
ADMIN_TOKEN = "docs-examples-admin-token"
FENCE = re.compile(r"^```(\w*)\n(.*?)\n```$", re.S | re.M)


# ---- reading the pages --------------------------------------------------------------------

@dataclass
class Example:
    title: str
    bash: str
    python: str
    status: int
    shown: str  # the response block as the page shows it
    shown_lang: str


def api_page() -> tuple[str, list[Example]]:
    """API.md's setup block and its examples: the `###` sections before any `##` one (the Python
    client's section at the end is run by tests/test_client.py)."""
    text = re.split(r"^## ", API_MD.read_text(), flags=re.M)[0]  # a later "## ..." section is not ours
    head, *sections = re.split(r"^### ", text, flags=re.M)
    setup = [body for lang, body in FENCE.findall(head) if lang == "bash"]
    assert len(setup) == 1, "API.md's introduction should have exactly one bash block (the variables)"
    examples = []
    for section in sections:
        title = section.splitlines()[0].strip()
        blocks = FENCE.findall(section)
        bash = [b for lang, b in blocks if lang == "bash"]
        python = [b for lang, b in blocks if lang == "python"]
        status = re.search(r"^Response \((\d{3}),", section, re.M)
        assert len(bash) == 1 and len(python) == 1 and status, f"API.md section {title!r}: one bash block, " \
            "one python block and a 'Response (NNN, ...' line expected"
        after = section[status.end():]
        lang, shown = FENCE.search(after).groups()
        examples.append(Example(title, bash[0], python[0], int(status.group(1)), shown, lang))
    return setup[0], examples


def commands(block: str) -> list[str]:
    """One string per command, as bash reads them: lines continued by a backslash or inside an open
    quote belong to the command above; blank lines and comments are left out."""
    out, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if current.endswith("\\\n"):
            continue
        try:
            shlex.split(current)
        except ValueError:  # an open quote: the command goes on
            continue
        out.append(current.strip())
        current = ""
    assert not current, f"unfinished command: {current}"
    return out


def try_it() -> tuple[str, list[str]]:
    """README's "Try it" section: its bash block and its table's rows."""
    text = README.read_text()
    section = text.split("\n## Try it\n", 1)[1].split("\n## ", 1)[0]
    bash = [b for lang, b in FENCE.findall(section) if lang == "bash"]
    assert len(bash) == 1, "README's Try it should have one bash block"
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return bash[0], rows


def request_of(command: str) -> tuple[str, str, dict | None]:
    """(method, path, JSON body) of a curl command as written."""
    args = shlex.split(command.replace("\\\n", " "))
    assert args[0] == "curl", command
    method = args[args.index("-X") + 1] if "-X" in args else ("POST" if "-d" in args else "GET")
    url = next(a for a in args[1:] if "$BASE" in a or "localhost:" in a or a.startswith("http"))
    path = "/" + url.split("/", 3)[-1] if url.startswith("http") else url.replace("$BASE", "")
    path = re.sub(r"^/?localhost:\d+", "", path) or "/"
    body = json.loads(args[args.index("-d") + 1]) if "-d" in args else None
    return method, path, body


# ---- checking responses -------------------------------------------------------------------

def same_shape(doc, got, where: str = "response") -> None:
    """The keys the page shows are the keys that came back (first item of each list; "{…}" = a dict)."""
    if doc == "{…}":
        assert isinstance(got, dict), f"{where}: expected an object, got {got!r:.200}"
    elif isinstance(doc, dict):
        assert isinstance(got, dict), f"{where}: expected an object, got {got!r:.200}"
        assert set(doc) == set(got), \
            f"{where}: the page shows keys {sorted(doc)}, the server sent {sorted(got)}"
        for key in doc:
            same_shape(doc[key], got[key], f"{where}.{key}")
    elif isinstance(doc, list):
        assert isinstance(got, list), f"{where}: expected a list, got {got!r:.200}"
        items = [d for d in doc if d != "…"]
        if items and got:
            same_shape(items[0], got[0], f"{where}[0]")
    elif doc is not None and got is not None:
        assert _kind(doc) == _kind(got), f"{where}: the page shows {doc!r:.80}, the server sent {got!r:.200}"


def _kind(value) -> str:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return "number"
    return type(value).__name__


def sse_events(text: str) -> list[str]:
    lines = [line for line in text.splitlines() if line.strip()]
    assert lines and all(line.startswith("data: ") for line in lines), f"not an event stream: {text[:300]!r}"
    assert lines[-1] == "data: [DONE]", lines[-1]
    return [line[6:] for line in lines[:-1]]


def check_route(method: str, path: str, body: dict | None, status: int, text: str) -> None:
    """What the docs promise of each task route, beyond status and shape."""
    if status != 200 or method != "POST":
        return
    if path == "/extract":
        r = json.loads(text)
        assert isinstance(r["entities"], list) and r["entities"], f"no entities from the ie adapter: {r}"
        for e in r["entities"]:
            assert body["text"][e["start"]:e["end"]] == e["text"], e
        assert r["adapter"] == body.get("adapter", "ie")
    elif path == "/qa" and body.get("options"):
        r = json.loads(text)
        assert r["answer"] in body["options"], r
        assert r["adapter"] == body.get("adapter", "qa")
    elif path == "/generate":
        if body.get("stream"):
            events = [json.loads(e) for e in sse_events(text)]
            done = events[-1]
            assert done.get("done") is True and done["adapter"] == body.get("adapter", "gen"), done
            assert "".join(e.get("text", "") for e in events).strip()
        else:
            r = json.loads(text)
            assert r["adapter"] == body.get("adapter", "gen") and r["text"].strip(), r
    elif path == "/compare":
        r = json.loads(text)
        options = body["request"].get("options")
        assert [x["adapter"] for x in r["results"]] == body["adapters"]
        for x in r["results"]:
            assert x["status"] == 200 and (not options or x["response"]["answer"] in options), x


# ---- static checks (no engine) ------------------------------------------------------------

def test_api_page_has_every_route_and_the_admin_alias_api():
    setup, examples = api_page()
    assert len(examples) >= 20
    requests = [request_of(commands(e.bash)[0]) for e in examples]
    seen = {(m, p) for m, p, _ in requests}
    for route in [("GET", "/health/live"), ("GET", "/health/ready"), ("POST", "/qa"), ("POST", "/extract"),
                  ("POST", "/generate"), ("POST", "/compare"), ("GET", "/v1/models"),
                  ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("GET", "/admin/adapters"),
                  ("POST", "/admin/adapters"), ("GET", "/admin/aliases/qa"), ("PUT", "/admin/aliases/qa"),
                  ("POST", "/admin/aliases/qa/promote"), ("GET", "/metrics")]:
        assert route in seen, f"API.md has no example of {route}"
    bodies = [b for _, _, b in requests if b]
    assert any("weights" in b for b in bodies), "no weighted split example"
    stale = [e for e, (_, _, b) in zip(examples, requests, strict=True) if b and "expected_generation" in b]
    assert stale and stale[0].status == 409, "the compare-and-swap example should show a stale one's 409"


def test_api_page_commands_expand_their_variables(tmp_path):
    """Each curl line, run by bash with a stand-in `curl`, gets the real URL and token: no variable left
    inside single quotes, none in a Python string."""
    setup, examples = api_page()
    assert DOC_BASE in setup and "ADMIN_TOKEN=" in setup
    for e in examples:
        [command] = commands(e.bash)
        script = f'{setup}\ncurl() {{ printf "%s\\n" "$@"; }}\n{command}'
        out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True,
                             env={"PATH": os.environ["PATH"], "BIOINSTRUCT_ADMIN_TOKEN": "s3cret"}).stdout
        args = out.splitlines()
        assert any(a.startswith(f"{DOC_BASE}/") for a in args), f"{e.title}: no URL in {args}"
        assert "$" not in out, f"{e.title}: a variable was not expanded: {out}"
        if "ADMIN_TOKEN" in command:
            assert "authorization: Bearer s3cret" in args, f"{e.title}: token not expanded: {args}"
        assert "$BASE" not in e.python and "$ADMIN_TOKEN" not in e.python, e.title
        assert 'os.environ.get("BASE", "http://127.0.0.1:8000")' in e.python, e.title
        compile(e.python, e.title, "exec")


def test_api_page_shows_the_shipped_adapters_and_no_local_paths():
    text = API_MD.read_text()
    for path in {str(ROOT), os.path.expanduser("~"), "/tmp/", "/home/"} - {"/"}:
        assert path not in text, f"API.md shows a local path: {path}"
    _, examples = api_page()
    by_title = {e.title: e for e in examples}
    extract = json.loads(by_title["/extract"].shown)
    assert extract["adapter"] == "ie" and extract["entities"], "API.md's /extract: the ie adapter's entities"
    assert json.loads(by_title["/generate"].shown)["adapter"] == "gen"
    models = json.loads(by_title["OpenAI-compatible: list models"].shown)["data"]
    assert all(not str(m.get("root") or "").startswith("/") for m in models if isinstance(m, dict))


def test_try_it_commands_are_the_routes_the_table_shows():
    bash, rows = try_it()
    paths = [request_of(c)[1] for c in commands(bash)]
    assert paths[0] == "/health/ready" and {"/qa", "/extract", "/generate"} <= set(paths)
    assert rows[:2] == ["| route | sent | answer (adapter) |", "|---|---|---|"] and len(rows) >= 12


# ---- live --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def docs_gateway(engine, core, tmp_path_factory):
    """A gateway with its own registry holding the shipped adapters (the shared live_service's
    tests publish their own `qa`), and a copy of adapters/qa under its publish root as docs-qa."""
    from bioinstruct.model import inspect_base_model
    from bioinstruct.publishing import PublishTarget
    from bioinstruct.registry import Registry
    from bioinstruct.shipped import publish_shipped

    registry = tmp_path_factory.mktemp("docs-registry")
    publish_root = tmp_path_factory.mktemp("docs-publish")
    (publish_root / "docs-qa").mkdir()
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copy(ROOT / "adapters" / "qa" / name, publish_root / "docs-qa" / name)
    base = inspect_base_model(engine.model_dir)
    lines = publish_shipped(Registry(registry), PublishTarget.of(base, engine.settings), root=ROOT / "adapters",
                            say=lambda *_: None)
    assert len(lines) == 4, lines
    with ExtraGateway(engine, core, registry, admin_token=ADMIN_TOKEN, publish_root=publish_root) as gw:
        ready = httpx.get(f"{gw.base_url}/health/ready", timeout=10).json()
        assert set(ready["aliases"]) == {"qa", "ie", "gen", "all"}, ready
        yield gw
        loaded = set(gw.app.state.gateway.adapters.loaded)
    for ref in loaded:  # leave the shared engine's LoRA slots to the other tests
        httpx.post(f"{engine.base_url}/v1/unload_lora_adapter", json={"lora_name": ref}, timeout=60)


@pytest.fixture(scope="module")
def curl_env(tmp_path_factory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("curl-home")
    (home / ".curlrc").write_text('write-out = "\\n%{http_code}"\n')
    return {**os.environ, "CURL_HOME": str(home), "BIOINSTRUCT_ADMIN_TOKEN": ADMIN_TOKEN}


def run_curl(script: str, env: dict[str, str]) -> tuple[int, str]:
    proc = subprocess.run(["bash", "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, f"{script}\n{proc.stderr}"
    text, _, status = proc.stdout.rpartition("\n")
    assert status.isdigit() and status != "000", f"{script}: no HTTP status ({proc.stdout[-300:]!r})"
    return int(status), text


def test_readme_try_it_table_is_what_try_it_prints(docs_gateway):
    """The table is try_it.py's output, and try_it.py runs: same rows sent; answers compared."""
    _, rows = try_it()
    script = str(ROOT / "scripts" / "try_it.py")
    proc = subprocess.run([sys.executable, script, "--base-url", docs_gateway.base_url, "--markdown"],
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr
    fresh = proc.stdout.strip().splitlines()
    assert len(fresh) == len(rows), (fresh, rows)
    sent = [r.split(" | ")[:2] for r in rows]
    assert [r.split(" | ")[:2] for r in fresh] == sent, "README's table does not list what try_it.py sends"
    assert fresh == rows, "README's Try it table differs from `scripts/try_it.py --markdown` now:\n" \
        + "\n".join(f"- {a}\n+ {b}" for a, b in zip(rows, fresh, strict=True) if a != b)


def test_readme_try_it_commands(docs_gateway, curl_env):
    bash, _ = try_it()
    address = docs_gateway.base_url.removeprefix("http://")
    for command in commands(bash):
        assert "localhost:8000" in command, command
        status, text = run_curl(command.replace("localhost:8000", address), curl_env)
        method, path, body = request_of(command)
        assert status == 200, f"{command}\n{text[:500]}"
        if path == "/health/ready":
            assert json.loads(text)["status"] == "ready"
        check_route(method, path, body, status, text)


def test_every_api_example(docs_gateway, curl_env):
    setup, examples = api_page()
    setup = setup.replace(DOC_BASE, docs_gateway.base_url)
    py_env = {**curl_env, "BASE": docs_gateway.base_url, "ADMIN_TOKEN": ADMIN_TOKEN}
    for e in examples:
        [command] = commands(e.bash)
        status, text = run_curl(f"{setup}\n{e.bash}", curl_env)
        assert status == e.status, f"{e.title}: the page says {e.status}, got {status}: {text[:500]}"
        if e.shown_lang == "json":
            same_shape(json.loads(e.shown), json.loads(text), e.title)
        elif e.shown.startswith("data: "):
            sse_events(text)
        else:
            assert text.splitlines()[0] == e.shown.splitlines()[0], f"{e.title}: {text[:300]}"
        check_route(*request_of(command), status, text)
        py = subprocess.run([sys.executable, "-c", e.python], capture_output=True, text=True, env=py_env,
                            timeout=300)
        assert py.returncode == 0 and py.stdout.strip(), f"{e.title}: python example failed:\n{py.stderr}"
