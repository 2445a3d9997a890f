"""`bioinstruct serve` / `engine` options, and a Hub model id as the base model.

The options are generated from the settings classes: these tests check that every field is
an option whose help names its variable and default, that flags reach the settings the
gateway is built with (environment as the default, the flag winning), and that a bad value
is an exit-2 error naming the flag. The Hub is a loopback server speaking the API paths
huggingface_hub's snapshot_download asks for; the real Hub is never reached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from unittest import mock
from urllib.parse import unquote, urlsplit

import httpx
import pytest
from typer.testing import CliRunner

from bioinstruct import cli
from bioinstruct.model import MARKER, inspect_base_model
from bioinstruct.service import cli as service_cli
from bioinstruct.service.engine import EngineSettings, free_port
from bioinstruct.service.observability import ObservabilitySettings
from bioinstruct.service.settings import ServiceSettings
from bioinstruct.settings import CoreSettings
from tests.fake_engine import FakeEngine
from tests.fake_engine import serve as serve_fake_engine
from tests.server_process import stop, wait_ready

ROOT = Path(__file__).resolve().parents[1]
CLASSES = (CoreSettings, ServiceSettings, EngineSettings, ObservabilitySettings)
WIDE = {"COLUMNS": "400"}


def _env_name(cls, field: str) -> str:
    return (cls.model_config["env_prefix"] + field).upper()


def _clean_environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("BIOINSTRUCT_")}


def _invoke(args: list[str], env: dict[str, str] | None = None):
    from bioinstruct.service.settings import service_settings
    from bioinstruct.settings import core_settings

    cli._register_subcommands()
    # Settings read under this environment must not outlive it (core_settings() is cached
    # for the process: a later test would see this test's base model).
    core_settings.cache_clear()
    service_settings.cache_clear()
    try:
        with mock.patch.dict(os.environ, _clean_environ(), clear=True):
            os.environ.update(env or {})
            result = CliRunner().invoke(cli.app, args, env=WIDE)
            exported = dict(os.environ)
    finally:
        core_settings.cache_clear()
        service_settings.cache_clear()
    return result, exported


# ---- options from the settings classes ---------------------------------------------------------

def test_serve_help_lists_every_setting_with_its_variable_and_default():
    result, _ = _invoke(["serve", "--help"])
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # rich's box drawing and wrapping aside
    fields = [(cls, name) for cls in CLASSES for name in cls.model_fields]
    assert len(fields) >= 45
    missing = [_env_name(cls, name) for cls, name in fields if _env_name(cls, name) not in text]
    assert not missing, f"settings not in serve --help: {missing}"
    for flag in ("--model", "--revision", "--port", "--host", "--registry", "--max-loras", "--max-cpu-loras",
                 "--max-lora-rank", "--max-model-len", "--served-model-name", "--api-key",
                 "--preload-adapters", "--download-dir", "--enable-prefix-caching", "--no-enable-lora",
                 "--engine-kv-cache-gib"):
        assert f" {flag} " in text, flag
    assert "(BIOINSTRUCT_ENGINE_MAX_LORAS, default 4)" in text
    assert "(BIOINSTRUCT_PORT, default 8000)" in text


def test_help_shows_a_value_the_environment_sets_but_never_a_secret():
    env = {**_clean_environ(), **WIDE, "BIOINSTRUCT_MAX_QUEUE": "77", "BIOINSTRUCT_API_KEYS": "sekrit-key"}
    proc = subprocess.run([sys.executable, "-m", "bioinstruct.cli", "serve", "--help"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=120)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert "(BIOINSTRUCT_MAX_QUEUE, default 256; now '77' from the environment)" in text
    assert "sekrit-key" not in text and "now set from the environment" in text


def test_engine_help_lists_the_engine_and_model_settings():
    result, _ = _invoke(["engine", "--help"])
    text = " ".join(result.output.split())
    assert result.exit_code == 0
    for cls in (CoreSettings, EngineSettings):
        for name in cls.model_fields:
            assert _env_name(cls, name) in text
    assert "BIOINSTRUCT_MAX_QUEUE" not in text  # a gateway setting: not the bare engine's


def test_a_new_setting_becomes_an_option_without_touching_the_cli():
    class More(ServiceSettings):
        brand_new_limit: int = 3

    options = service_cli.setting_options([(More, "Gateway")])
    (option,) = [o for o in options if o.field == "brand_new_limit"]
    assert (option.flag, option.env) == ("--brand-new-limit", "BIOINSTRUCT_BRAND_NEW_LIMIT")
    assert "default 3" in service_cli.option_help(option, environ={})


def test_two_settings_under_one_variable_are_refused():
    class Clash(EngineSettings):
        request_timeout_s: float = 1.0  # BIOINSTRUCT_ENGINE_REQUEST_TIMEOUT_S is a gateway setting

    with pytest.raises(RuntimeError, match="BIOINSTRUCT_ENGINE_REQUEST_TIMEOUT_S"):
        service_cli.setting_options([(ServiceSettings, "g"), (Clash, "e")])


def test_flags_reach_the_settings_the_gateway_is_built_with(monkeypatch, tmp_path, base_model_dir):
    """Through the real command, up to create_app: environment as default, the flag winning."""
    built: dict = {}

    def fake_create_app(settings, *, core, engine_settings, observability):
        built.update(service=settings, core=core, engine=engine_settings, observability=observability)
        return "app"

    import bioinstruct.service.app as app_module
    import bioinstruct.service.engine as engine_module
    import bioinstruct.service.observability as obs_module

    monkeypatch.setattr(app_module, "create_app", fake_create_app)
    monkeypatch.setattr(engine_module, "die_with_parent", lambda: None)
    monkeypatch.setattr(obs_module, "configure_logging", lambda level: None)
    ran: list = []
    monkeypatch.setattr(service_cli, "run_server", lambda app, settings, level, log_config: ran.append(app))
    args = ["serve", "--model", str(base_model_dir), "--port", "9123", "--host", "0.0.0.0",
            "--registry", str(tmp_path / "reg"), "--max-loras", "2", "--max-cpu-loras", "5",
            "--max-lora-rank", "32", "--max-model-len", "2048", "--served-model-name", "smol",
            "--api-key", "k1", "--api-key", "k2", "--preload-adapters", "qa", "--preload-adapters", "ie",
            "--no-enable-prefix-caching", "--lora-target-modules", "qkv_proj", "--shipped-adapters", "off",
            "--engine-extra-args=--enforce-eager", "--log-format", "json"]
    result, exported = _invoke(args, env={"BIOINSTRUCT_PORT": "7000", "BIOINSTRUCT_MAX_QUEUE": "77"})
    assert result.exit_code == 0, result.output
    assert ran == ["app"]
    service, core, engine = built["service"], built["core"], built["engine"]
    assert (service.host, service.port, service.max_queue) == ("0.0.0.0", 9123, 77)  # flag wins, env stays
    assert service.api_keys == {"k1": ["*"], "k2": ["*"]}
    assert service.preload == ["qa", "ie"]
    assert core.base_model_dir == base_model_dir and core.registry == str(tmp_path / "reg")
    assert (engine.max_loras, engine.max_cpu_loras) == (2, 5)
    assert (engine.max_lora_rank, engine.max_model_len) == (32, 2048)
    assert engine.served_name == "smol" and engine.enable_prefix_caching is False
    assert engine.lora_target_modules == ["qkv_proj"] and engine.extra_args == ["--enforce-eager"]
    assert built["observability"].log_format == "json"
    # Exported, so every part of the process (and the engine it starts) reads the same values.
    assert exported["BIOINSTRUCT_ENGINE_MAX_LORAS"] == "2" and exported["BIOINSTRUCT_PORT"] == "9123"
    assert "BioInstruct gateway on http://0.0.0.0:9123" in result.output


def test_serve_config_maps_flags_to_settings_without_side_effects():
    options = service_cli.setting_options(service_cli.SERVE_CLASSES)
    values = {o.param: None for o in options}
    values.update(s_port="8111", s_engine_max_loras="3", s_engine_enable_lora=False,
                  s_engine_lora_target_modules=["[]"], s_preload_adapters=[""], s_base_model="org/some-model",
                  s_base_model_revision="v1.0")
    with mock.patch.dict(os.environ, _clean_environ(), clear=True):
        config = service_cli.serve_config(values, options)
        assert "BIOINSTRUCT_PORT" not in os.environ  # only `serve` exports
    assert config.service.port == 8111 and config.engine.max_loras == 3 and config.engine.enable_lora is False
    assert config.engine.lora_target_modules == []  # JSON as the variable takes it: every layer
    assert config.service.preload == []
    assert config.core.base_model_hub_id == "org/some-model" and config.core.base_model_revision == "v1.0"
    assert config.overrides["BIOINSTRUCT_ENGINE_ENABLE_LORA"] == "false"


@pytest.mark.parametrize("args, said", [
    (["--max-loras", "many"], "--max-loras (BIOINSTRUCT_ENGINE_MAX_LORAS): Input should be a valid integer"),
    (["--qa-method", "fast"], "--qa-method (BIOINSTRUCT_QA_METHOD): Input should be 'logprob'"),
    (["--engine-host", "0.0.0.0"],
     "--engine-host (BIOINSTRUCT_ENGINE_HOST): engine host '0.0.0.0' is not loopback"),
    (["--lora-target-modules", "[qkv"],
     "--lora-target-modules (BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES): Input should be a valid list"),
    (["--engine-cpu-nice", "40"], "--engine-cpu-nice (BIOINSTRUCT_ENGINE_CPU_NICE): Input should be less"),
])
def test_a_bad_flag_is_an_exit_2_error_naming_it(args, said):
    result, _ = _invoke(["serve", *args])
    assert result.exit_code == 2
    assert said in " ".join(result.output.split())
    assert "Traceback" not in result.output


def test_a_bad_variable_is_named_as_the_variable_and_keys_are_not_echoed():
    result, _ = _invoke(["serve"], env={"BIOINSTRUCT_MAX_INFLIGHT": "lots"})
    assert result.exit_code == 2
    assert "BIOINSTRUCT_MAX_INFLIGHT (environment): Input should be a valid integer" in result.output
    result, _ = _invoke(["serve", "--api-key", "{not-json-sekrit"])
    assert result.exit_code == 2 and "--api-key (BIOINSTRUCT_API_KEYS)" in result.output
    assert "sekrit" not in result.output


def test_serve_bad_value_from_a_real_process_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "bioinstruct.cli", "serve", "--max-model-len", "long"],
                          capture_output=True, text=True, cwd=ROOT, env=_clean_environ(), timeout=120)
    assert proc.returncode == 2
    assert "error: --max-model-len (BIOINSTRUCT_ENGINE_MAX_MODEL_LEN)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_engine_command_refuses_a_missing_model_folder_clearly(tmp_path):
    result, _ = _invoke(["engine", "--model", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "does not exist" in result.output and "Traceback" not in result.output


# ---- a Hub model id as the base model ------------------------------------------------------------

class FakeHub:
    """A stand-in for the Hub's API: model info, the file tree at a commit, and file downloads."""

    def __init__(self) -> None:
        self.repos: dict[str, dict] = {}
        self.requests: list[str] = []

    def commit(self, repo_id: str, files: dict[str, bytes], branch: str = "main") -> str:
        repo = self.repos.setdefault(repo_id, {"branches": {}, "commits": {}})
        digest = hashlib.sha1(repr(sorted(files.items())).encode() + str(len(repo["commits"])).encode())
        sha = digest.hexdigest()
        repo["commits"][sha] = dict(files)
        repo["branches"][branch] = sha
        return sha

    def lookup(self, repo_id: str, revision: str) -> tuple[dict | None, str | None]:
        repo = self.repos.get(repo_id)
        if repo is None:
            return None, None
        sha = repo["branches"].get(revision, revision)
        return repo, sha if sha in repo["commits"] else None

    def answer(self, path: str) -> tuple[int, bytes, dict[str, str]]:
        parts = path.strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) in (4, 6, 7):  # info (at a revision) or tree
            kind, revision = (parts[4], parts[5]) if len(parts) > 4 else ("revision", "main")
            repo, sha = self.lookup("/".join(parts[2:4]), revision)
            if repo is None:
                return _json(404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"})
            if sha is None:
                return _json(404, {"error": "Invalid rev id"}, {"X-Error-Code": "RevisionNotFound"})
            files = repo["commits"][sha]
            if kind == "revision":
                return _json(200, {"id": "/".join(parts[2:4]), "sha": sha, "private": False,
                                   "siblings": [{"rfilename": name} for name in files]})
            return _json(200, [{"type": "file", "path": name, "size": len(data),
                                "oid": hashlib.sha1(data).hexdigest()} for name, data in files.items()])
        if len(parts) >= 5 and parts[2] == "resolve":
            repo, sha = self.lookup("/".join(parts[:2]), parts[3])
            name = "/".join(parts[4:])
            if repo is None or sha is None or name not in repo["commits"][sha]:
                return _json(404, {"error": "Entry not found"}, {"X-Error-Code": "EntryNotFound"})
            data = repo["commits"][sha][name]
            return 200, data, {"X-Repo-Commit": sha, "ETag": f'"{hashlib.sha1(data).hexdigest()}"',
                               "Content-Type": "application/octet-stream"}
        return _json(404, {"error": f"no route {path}"})


def _json(status: int, body, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(body).encode(), {"Content-Type": "application/json", **(headers or {})}


@pytest.fixture
def hub():
    fake = FakeHub()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_HEAD(self) -> None:
            self.do_GET(head=True)

        def do_GET(self, head: bool = False) -> None:
            path = unquote(urlsplit(self.path).path)
            fake.requests.append(f"{self.command} {path}")
            status, body, headers = fake.answer(path)
            self.send_response(status)
            for key, value in headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not head:
                self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"  # type: ignore[attr-defined]
    yield fake
    server.shutdown()


def _tiny_model(base_model_dir: Path, seed: int = 0) -> dict[str, bytes]:
    """A causal-LM repository as the Hub would hold it: config, tokenizer, safetensors weights, plus
    files a base model must not fetch (pickle weights, an onnx/ sub-folder)."""
    header = json.dumps({"w": {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}}).encode()
    weights = struct.pack("<Q", len(header)) + header + struct.pack("<4f", seed, 1, 2, 3)
    config = json.loads((base_model_dir / "config.json").read_text())
    files = {"config.json": json.dumps(config).encode(), "model.safetensors": weights,
             "pytorch_model.bin": b"pickle: never fetched", "onnx/model.onnx": b"never fetched"}
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (base_model_dir / name).is_file():
            files[name] = (base_model_dir / name).read_bytes()
    return files


def _hub_env(hub, tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**_clean_environ(), "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
            "HF_HOME": str(tmp_path / "hf"),
            "HF_HUB_DISABLE_TELEMETRY": "1", "BIOINSTRUCT_MODEL_CACHE": str(tmp_path / "models"), **extra}


def _fetch(env: dict[str, str]) -> subprocess.CompletedProcess:
    code = ("from bioinstruct.model import ensure_base_model; from bioinstruct.settings import CoreSettings\n"
            "import json\n"
            "print(json.dumps(ensure_base_model(CoreSettings(), log=lambda *_: None).model_dump()))")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT,
                          timeout=120)


def test_a_hub_id_is_fetched_once_at_a_recorded_commit(hub, tmp_path, base_model_dir):
    first = hub.commit("org/tiny", _tiny_model(base_model_dir, seed=1))
    env = _hub_env(hub, tmp_path, BIOINSTRUCT_BASE_MODEL="org/tiny")
    proc = _fetch(env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    folder = tmp_path / "models" / "hub" / f"org--tiny@{first}"
    assert info["path"] == str(folder) and info["source"] == "org/tiny" and info["revision"] == first
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [MARKER, "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
        + (["chat_template.jinja"] if (base_model_dir / "chat_template.jinja").is_file() else []))
    marker = json.loads((folder / MARKER).read_text())
    assert marker["repo_id"] == "org/tiny" and marker["revision"] == first
    assert marker["revision_requested"] is None
    pins = json.loads((tmp_path / "models" / "hub" / "pins.json").read_text())
    assert pins == {"org/tiny@": first}
    assert not any("pytorch_model.bin" in r or "onnx" in r for r in hub.requests)

    # main moves on: the floating id stays on the recorded commit, and nothing is asked of the Hub.
    second = hub.commit("org/tiny", _tiny_model(base_model_dir, seed=2))
    hub.requests.clear()
    proc = _fetch(env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = json.loads(proc.stdout.strip().splitlines()[-1])
    assert again["revision"] == first and again["fingerprint"] == info["fingerprint"]
    assert hub.requests == []

    # A pinned revision is fetched beside it; its fingerprint differs (other weights).
    proc = _fetch({**env, "BIOINSTRUCT_BASE_MODEL_REVISION": second})
    assert proc.returncode == 0, proc.stderr[-3000:]
    pinned = json.loads(proc.stdout.strip().splitlines()[-1])
    assert pinned["revision"] == second and pinned["fingerprint"] != info["fingerprint"]
    assert CoreSettings(model_cache=tmp_path / "models", base_model="org/tiny").base_model_dir == folder


def test_hub_errors_are_clear_and_leave_nothing_half_written(hub, tmp_path, base_model_dir):
    hub.commit("org/tiny", _tiny_model(base_model_dir))
    cases = [
        ({"BIOINSTRUCT_BASE_MODEL": "org/missing"}, "the Hugging Face Hub has no model of that id"),
        ({"BIOINSTRUCT_BASE_MODEL": "org/tiny", "BIOINSTRUCT_BASE_MODEL_REVISION": "no-such-branch"},
         "has no revision 'no-such-branch'"),
        ({"BIOINSTRUCT_BASE_MODEL": "org/tiny", "HF_HUB_OFFLINE": "1"},
         "org/tiny has not been fetched into the model cache yet, and HF_HUB_OFFLINE is set"),
    ]
    for extra, said in cases:
        hub.requests.clear()
        env = _hub_env(hub, tmp_path, **extra)
        # serve with an external engine: nothing is started, whatever happens
        proc = subprocess.run([sys.executable, "-m", "bioinstruct.cli", "serve",
                               "--engine-url", "http://127.0.0.1:9", "--port", str(free_port())],
                              capture_output=True, text=True, env=env, cwd=ROOT,
                              timeout=120)
        assert proc.returncode == 2, (extra, proc.stderr[-2000:])
        assert said in " ".join(proc.stderr.split()), proc.stderr
        assert "Traceback" not in proc.stderr
    assert hub.requests == []  # the offline case asked nothing
    hub_dir = tmp_path / "models" / "hub"
    assert not [p for p in hub_dir.iterdir() if "@" in p.name and not p.name.endswith(".partial")]


def test_a_local_folder_is_never_taken_for_a_hub_id(tmp_path, monkeypatch):
    (tmp_path / "org" / "model").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    local = CoreSettings(base_model="org/model", model_cache=tmp_path / "models")
    assert local.base_model_hub_id is None and local.base_model_dir == tmp_path / "org" / "model"
    assert CoreSettings(base_model="org/other").base_model_hub_id == "org/other"
    for path in ("/abs/olute", "./org/x", "~/models/x", "a/b/c", "../x/y"):
        assert CoreSettings(base_model=path).base_model_hub_id is None, path
    assert CoreSettings(base_model=tmp_path / "org" / "model").base_model_dir == tmp_path / "org" / "model"


def test_serve_with_a_hub_id_serves_that_model(hub, tmp_path, base_model_dir):
    """The real command, with the stand-in engine behind it: the gateway is built on the fetched folder."""
    sha = hub.commit("HuggingFaceTB/Tiny-Instruct", _tiny_model(base_model_dir))
    engine_server = serve_fake_engine(FakeEngine(base_name="smol"), free_port())
    port = free_port()
    log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "bioinstruct.cli", "serve", "--model", "HuggingFaceTB/Tiny-Instruct",
            "--port", str(port), "--engine-url", f"http://127.0.0.1:{engine_server.server_address[1]}",
            "--served-model-name", "smol", "--registry", str(tmp_path / "registry"), "--preload-adapters", "",
            "--shipped-adapters", "off", "--log-level", "warning"]
    proc = subprocess.Popen(args, cwd=ROOT, env=_hub_env(hub, tmp_path), stdout=log.open("w"),
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_ready(f"http://127.0.0.1:{port}", 180, proc=proc, log=log)
        models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
        assert models[0]["id"] == "smol"
        assert models[0]["root"] == f"HuggingFaceTB--Tiny-Instruct@{sha}"
        folder = tmp_path / "models" / "hub" / f"HuggingFaceTB--Tiny-Instruct@{sha}"
        assert inspect_base_model(folder).revision == sha
    finally:
        stop(proc)
        engine_server.shutdown()


def test_the_readmes_configuration_names_only_real_options():
    text = (ROOT / "README.md").read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`(--[a-z][a-z-]*)", text))
    flags = {o.flag for o in service_cli.setting_options(service_cli.SERVE_CLASSES)}
    assert named and named <= flags, named - flags
    for variable in re.findall(r"`(BIOINSTRUCT_[A-Z_]+)` is `(--[a-z-]+)`", text):
        assert {o.env: o.flag for o in service_cli.setting_options(service_cli.SERVE_CLASSES)}[variable[0]] \
            == variable[1]


def test_a_hub_model_not_fetched_yet_is_said_so(tmp_path):
    result, _ = _invoke(["model", "info"], env={"BIOINSTRUCT_BASE_MODEL": "org/not-fetched",
                                                "BIOINSTRUCT_MODEL_CACHE": str(tmp_path)})
    assert result.exit_code == 2
    assert "the Hub model org/not-fetched has not been fetched" in " ".join(result.output.split())


def test_model_fetch_fetches_a_hub_id_as_make_serve_does(hub, tmp_path, base_model_dir):
    """`make serve` runs `bioinstruct model fetch` first: with a Hub id it fetches that model."""
    first = hub.commit("org/tiny", _tiny_model(base_model_dir, seed=3))
    env = _hub_env(hub, tmp_path, BIOINSTRUCT_BASE_MODEL="org/tiny")
    proc = subprocess.run([sys.executable, "-m", "bioinstruct.cli", "model", "fetch"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = tmp_path / "models" / "hub" / f"org--tiny@{first}"
    assert proc.stdout.strip().splitlines()[-1] == str(folder) and (folder / "config.json").is_file()
