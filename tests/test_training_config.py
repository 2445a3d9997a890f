"""Training config: packaged configs load, bad values fail with a message that says what to change."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from bioinstruct.training.config import ConfigError, TrainConfig, builtin_configs, load_config


def test_packaged_configs_load():
    assert {"cpu-smollm2", "gpu-llama2-7b"} <= set(builtin_configs())
    cpu = load_config("cpu-smollm2")
    assert cpu.precision == "fp32" and cpu.rank <= 16
    gpu = load_config("gpu-llama2-7b")
    assert gpu.precision == "bf16" and gpu.gradient_checkpointing
    assert load_config(None) == cpu  # the default


def test_overrides_apply_and_change_the_hash():
    base = load_config("cpu-smollm2")
    cfg = load_config("cpu-smollm2", {"rank": 4, "learning_rate": 1e-4, "save_every": 3, "seed": None})
    assert cfg.rank == 4 and cfg.learning_rate == 1e-4 and cfg.seed == base.seed
    assert cfg.hash_payload() != base.hash_payload()
    # bookkeeping settings do not change the weights: a run stays resumable when they change
    assert load_config("cpu-smollm2", {"save_every": 3, "eval_every": 7}).hash_payload() == base.hash_payload()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"rank": 32}, "above the serving engine's max LoRA rank 16"),
        ({"rank": 0}, "rank"),
        ({"learning_rate": -1}, "learning_rate"),
        ({"schedule": "cosine_restarts"}, "schedule"),
        ({"dropout": 1.5}, "dropout"),
        ({"batching": "random"}, "batching"),
        ({"target_modules": []}, "at least one module"),
        ({"ranks": 8}, "unknown setting"),
    ],
)
def test_bad_values_are_rejected_with_a_clear_message(overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config("cpu-smollm2", overrides)
    assert "invalid training config" in str(info.value)


def test_unknown_config_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="packaged configs: cpu-smollm2"):
        load_config("no-such-config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("rank: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)
    listy = tmp_path / "list.yaml"
    listy.write_text("- rank\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_cli_reports_bad_values_without_a_traceback(tmp_path):
    from bioinstruct.cli import _register_subcommands, app

    _register_subcommands()
    runner = CliRunner()
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "x.jsonl"), "--rank", "64"])
    assert res.exit_code == 2
    assert "max LoRA rank" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "x.jsonl"), "--category", "QA"])
    assert res.exit_code == 2 and "does not exist" in res.output
    res = runner.invoke(app, ["train", "--data", str(tmp_path / "x.jsonl"), "--category", "XYZ"])
    assert res.exit_code == 2 and "not one of" in res.output
    res = runner.invoke(app, ["train", "--target-modules", "q_proj,v_proj", "--schedule", "bogus"])
    assert res.exit_code == 2 and "schedule" in res.output


def test_target_modules_from_cli_string():
    from bioinstruct.training.cli import _overrides

    assert _overrides(lr=0.1, rank=None) == {"learning_rate": 0.1}
    cfg = TrainConfig.model_validate(_overrides(target_modules="q_proj, v_proj"))
    assert cfg.target_modules == ["q_proj", "v_proj"]
    every_layer = {"engine_lora_modules": []}
    assert TrainConfig.model_validate({**_overrides(target_modules="all-linear"), **every_layer}).target_modules \
        == "all-linear"


@pytest.mark.parametrize("targets", ["all-linear", "q_proj,gate_proj"])
def test_targets_outside_the_engine_lora_layers_are_refused_before_training(targets):
    from bioinstruct.training.cli import _overrides

    with pytest.raises(ValueError, match="outside the serving engine's LoRA layers"):
        TrainConfig.model_validate(_overrides(target_modules=targets))
    assert TrainConfig.model_validate(_overrides(target_modules="q_proj,v_proj,o_proj")).target_modules


def test_data_format_is_a_setting_whose_effect_is_in_the_data_fingerprint():
    base = load_config("cpu-smollm2")
    assert base.data_format == "auto"
    forced = load_config("cpu-smollm2", {"data_format": "messages"})
    assert forced.data_format == "messages"
    # "auto" and the format it detects are the same run: the detected format goes into the data fingerprint
    assert forced.hash_payload() == base.hash_payload() and "data_format" not in base.hash_payload()
    with pytest.raises(ConfigError, match=r"data_format: .*'alpaca'.*\(got 'sharegpt'\)"):
        load_config("cpu-smollm2", {"data_format": "sharegpt"})


def test_cli_rejects_an_unknown_format_without_a_traceback(tmp_path):
    from bioinstruct.cli import _register_subcommands, app

    _register_subcommands()
    res = CliRunner().invoke(app, ["train", "--data", str(tmp_path / "x.jsonl"), "--format", "sharegpt"])
    assert res.exit_code == 2 and "data_format" in res.output and "Traceback" not in res.output


@pytest.mark.parametrize("name", ["accelerate-ddp.yaml", "accelerate-fsdp.yaml", "accelerate-multinode.yaml"])
def test_shipped_accelerate_configs_load_as_accelerate_reads_them(name):
    from accelerate.commands.config.config_args import ClusterConfig

    from bioinstruct.training.config import CONFIGS_DIR

    cfg = ClusterConfig.from_yaml_file(str(CONFIGS_DIR / name))
    assert cfg.distributed_type.value in ("MULTI_GPU", "FSDP") and cfg.mixed_precision == "bf16"
    if name == "accelerate-multinode.yaml":
        assert cfg.num_machines == 2 and cfg.num_processes == 16 and cfg.main_process_ip
