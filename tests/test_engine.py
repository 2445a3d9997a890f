"""The real vLLM engine on the embedded model: answers, LoRA changes output, clean stop."""

from __future__ import annotations

import os
import time

import httpx
import pytest

from bioinstruct.adapter_files import EngineLimits
from bioinstruct.service.engine import EngineProcess, EngineSettings, EngineStartError

pytestmark = pytest.mark.engine


def _chat(engine, model: str, content: str, max_tokens: int = 32) -> str:
    r = httpx.post(
        f"{engine.base_url}/v1/chat/completions",
        json={"model": model, "messages": [{"role": "user", "content": content}],
              "max_tokens": max_tokens, "temperature": 0},
        timeout=120,
    )
    r.raise_for_status()
    return r.json()["choices"][0]["message"]["content"]


def test_engine_answers_a_biomedical_question(engine):
    answer = _chat(engine, "base", "What is the main function of insulin in the human body?")
    assert answer.strip()
    assert any(w in answer.lower() for w in ("glucose", "sugar", "blood", "hormone"))


def test_engine_listens_on_loopback_only(engine):
    assert engine.settings.host == "127.0.0.1"
    with pytest.raises(ValueError, match="loopback"):
        EngineSettings(host="0.0.0.0")


def test_cpu_engine_runs_below_the_gateway_priority(engine):
    """The engine's spinning threads must not starve the gateway's event loop (fast 429s)."""
    assert engine.device == "cpu" and engine.settings.cpu_nice == 10
    own = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, engine.pid) == min(19, own + engine.settings.cpu_nice)


def test_lora_adapter_loads_and_changes_greedy_output(engine, make_lora):
    folder = make_lora(seed=1)
    prompt = "List three symptoms of anemia."
    before = _chat(engine, "base", prompt)
    r = httpx.post(f"{engine.base_url}/v1/load_lora_adapter",
                   json={"lora_name": "test-lora@1", "lora_path": str(folder)}, timeout=60)
    assert r.status_code == 200, r.text
    try:
        with_lora = _chat(engine, "test-lora@1", prompt)
        assert with_lora != before
        assert _chat(engine, "base", prompt) == before  # the base is untouched
    finally:
        httpx.post(f"{engine.base_url}/v1/unload_lora_adapter", json={"lora_name": "test-lora@1"}, timeout=30)
    r = httpx.post(f"{engine.base_url}/v1/chat/completions",
                   json={"model": "test-lora@1", "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
    assert r.status_code == 404


def test_engine_command_has_cpu_defaults(base_model_dir):
    proc = EngineProcess(base_model_dir, EngineSettings(device="cpu", port=9))
    cmd = proc.command()
    assert cmd[cmd.index("--dtype") + 1] == "float32"
    assert cmd[cmd.index("--host") + 1] == "127.0.0.1"
    env = proc.environment()
    assert env["VLLM_CPU_NUM_OF_RESERVED_CPU"] == "0"
    assert env["HF_HUB_OFFLINE"] == "1"
    assert env["VLLM_ALLOW_RUNTIME_LORA_UPDATING"] == "True"
    lora = cmd[cmd.index("--lora-target-modules") + 1:]
    assert lora[:2] == ["qkv_proj", "o_proj"] and lora[2].startswith("--")  # attention only, by default


def test_engine_lora_layers_are_settings(base_model_dir, monkeypatch):
    monkeypatch.delenv("BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES", raising=False)
    assert EngineSettings(device="cpu", port=9).adapter_limits(576).lora_modules == ("qkv_proj", "o_proj")
    monkeypatch.setenv("BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES", "[]")
    every_layer = EngineSettings(device="cpu", port=9)
    assert every_layer.adapter_limits(576).lora_modules is None
    assert "--lora-target-modules" not in EngineProcess(base_model_dir, every_layer).command()
    plain = EngineProcess(base_model_dir, EngineSettings(device="cpu", port=9, enable_lora=False)).command()
    assert not {"--enable-lora", "--max-loras", "--lora-target-modules"} & set(plain)


def test_lora_layers_default_by_device_attention_on_cpu_every_layer_on_gpu(base_model_dir, monkeypatch):
    monkeypatch.delenv("BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES", raising=False)
    gpu = EngineSettings(device="cuda", port=9)
    assert gpu.lora_layers() == [] and gpu.adapter_limits(576).lora_modules is None  # all-linear adapters serve
    assert "--lora-target-modules" not in EngineProcess(base_model_dir, gpu).command()
    assert EngineSettings(device="cpu", port=9).lora_layers() == ["qkv_proj", "o_proj"]
    monkeypatch.setenv("BIOINSTRUCT_ENGINE_DEVICE", "cuda")
    assert EngineLimits().adapter_limits(576).lora_modules is None  # what publish checks against
    monkeypatch.setenv("BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES", '["qkv_proj"]')  # a setting wins on any device
    assert EngineLimits().lora_layers() == ["qkv_proj"]
    cmd = EngineProcess(base_model_dir, EngineSettings(port=9)).command()
    assert cmd[cmd.index("--lora-target-modules") + 1] == "qkv_proj"


def test_start_failure_carries_engine_log(tmp_path):
    bad = tmp_path / "not-a-model"
    bad.mkdir()
    (bad / "config.json").write_text("{}")
    proc = EngineProcess(bad, EngineSettings(device="cpu", log_dir=tmp_path, startup_timeout_s=240))
    proc.start()
    started = time.monotonic()
    with pytest.raises(EngineStartError) as info:
        proc.wait_healthy()
    proc.stop()
    assert "Last log lines" in str(info.value)
    assert str(info.value).count("\n") > 3  # real lines of vLLM's output
    assert time.monotonic() - started < 240
    assert not proc.running


def _children_of(pid: int) -> set[int]:
    out = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pid or int(fields[3]) == pid:  # ppid or pgid
                    out.add(int(entry))
            except (OSError, IndexError):
                continue
    return out
