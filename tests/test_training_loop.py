"""The training loop: exact resume, determinism, loss normalisation, publishing and its manifest.

Loop mechanics run on a tiny randomly initialised Llama (the embedded tokenizer, 2 layers,
hidden 64) so that a few optimizer steps take seconds; one test runs the real embedded
SmolLM2 for two steps.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
import torch
from safetensors.torch import load_file

from bioinstruct.adapter_files import AdapterLimits
from bioinstruct.instruct.prompts import qa_task
from bioinstruct.instruct.records import InstructionRecord
from bioinstruct.model import inspect_base_model
from bioinstruct.registry import Registry
from bioinstruct.training import batching
from bioinstruct.training.config import load_config
from bioinstruct.training.data import sha256_file, tokenize_record
from bioinstruct.training.trainer import TrainJob, response_loss, train
from tests.tiny_model import make_tiny_llama

TINY = {"max_length": 128, "rank": 4, "alpha": 8, "dropout": 0.1, "batch_size": 2, "grad_accum": 2,
        "max_steps": 6, "save_every": 2, "eval_every": 3, "learning_rate": 1e-2, "eval_fraction": 0.1}


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory, base_model_dir) -> Path:
    return make_tiny_llama(base_model_dir, tmp_path_factory.mktemp("tiny-llama"))


def _wait_for_checkpoint(proc: subprocess.Popen, run_dir: Path, timeout: float) -> None:
    """Until the run has written its first checkpoint (the moment to kill it)."""
    deadline = time.monotonic() + timeout
    while not list((run_dir / "checkpoints").glob("step-*")):
        assert proc.poll() is None, proc.stdout.read()
        assert time.monotonic() < deadline, f"no checkpoint within {timeout:.0f} s"
        time.sleep(0.05)


def _records(n: int = 30, category: str = "QA", start: int = 0) -> list[dict]:
    out = []
    for i in range(start, start + n):
        instruction, input_text = qa_task(f"Is compound {i} hepatotoxic?", ["evidence " * (3 + (i * 7) % 25)],
                                          ["yes", "no", "maybe"], variant=i)
        out.append({"id": f"syn:{category}:{i}", "instruction": instruction, "input": input_text,
                    "output": ["yes", "no", "maybe"][i % 3], "category": category,
                    "provenance": {"source": "test", "item_id": f"{category}{i}"}})
    return out


@pytest.fixture(scope="module")
def data_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "qa.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in _records()))
    return path


def _job(tiny: Path, data: Path, run_dir: Path, registry: Path | None = None, **over) -> TrainJob:
    cfg = load_config("cpu-smollm2", {**TINY, "base_model": str(tiny), **over})
    return TrainJob(config=cfg, data_files=[data], category="QA", name="test-qa", run_dir=run_dir,
                    publish=registry is not None, alias="qa" if registry else None,
                    registry=str(registry) if registry else None)


def _weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "adapter" / "adapter_model.safetensors"))


@pytest.fixture(scope="module")
def full_run(tiny_model_dir, data_file, tmp_path_factory):
    root = tmp_path_factory.mktemp("full")
    result = train(_job(tiny_model_dir, data_file, root / "run", registry=root / "registry"), progress=False,
                   log=lambda _m: None)
    return result, root / "registry"


def test_resume_from_a_mid_run_checkpoint_gives_identical_weights(full_run, tiny_model_dir, data_file, tmp_path):
    uninterrupted, _ = full_run
    job = _job(tiny_model_dir, data_file, tmp_path / "run")
    # "killed" after step 3: the last checkpoint is step 2, so step 3 is lost and redone
    first = train(job, progress=False, log=lambda _m: None, stop_after_step=3)
    assert not first.finished
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step-000002"]
    messages: list[str] = []
    second = train(job, progress=False, log=messages.append)  # the same job again
    assert second.finished and second.resumed_from == 2
    assert any("resuming from step-000002" in m for m in messages)

    # two separate runs with the same seed: same weights, bit for bit
    a, b = _weights(uninterrupted.run_dir), _weights(second.run_dir)
    assert a.keys() == b.keys() and len(a) == 2 * 4 * 2  # lora_A/B x q,k,v,o x 2 layers
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert any(k.endswith("lora_B.weight") and a[k].abs().sum() > 0 for k in a)  # it did learn

    # the step log has every step once, with the same losses
    def losses(run_dir: Path) -> list[tuple[int, float]]:
        recs = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
        return [(r["step"], r["loss"]) for r in recs if "loss" in r]

    assert [s for s, _ in losses(second.run_dir)] == list(range(1, 7))
    assert losses(second.run_dir) == losses(uninterrupted.run_dir)
    assert second.summary["eval_loss"] == uninterrupted.summary["eval_loss"]
    assert (second.run_dir / "loss.png").stat().st_size > 1000


def test_manifest_after_publish(full_run, tiny_model_dir, data_file):
    result, registry_root = full_run
    registry = Registry(registry_root)
    base = inspect_base_model(tiny_model_dir)
    m = result.manifest
    assert m is not None and m.ref == "test-qa@1"
    assert registry.alias("qa").target == "test-qa@1"
    stored = registry.manifest("test-qa", 1)
    assert stored == m
    # what the service checks before loading it
    registry.verify("test-qa", 1, base_fingerprint=base.fingerprint,
                    limits=AdapterLimits(base_hidden_size=base.hidden_size, max_rank=16))
    assert m.category == "QA" and m.base_model_fingerprint == base.fingerprint and m.base_model == base.path
    assert m.rank == 4 and m.alpha == 8 and m.target_modules == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert set(m.files) >= {"adapter_config.json", "adapter_model.safetensors"}
    t = m.training
    assert t["category"] == "QA" and t["base_model_fingerprint"] == base.fingerprint
    [f] = t["data"]["files"]
    assert f["path"] == str(data_file.resolve()) and f["sha256"] == sha256_file(data_file)
    assert f["records"] == 30 and f["categories"] == {"QA": 30}
    assert t["data"]["train_examples"] + t["data"]["eval_examples"] == 30 and t["data"]["eval_examples"] == 3
    hp = t["hyperparameters"]
    assert (hp["rank"], hp["alpha"], hp["dropout"], hp["learning_rate"], hp["seed"], hp["max_steps"],
            hp["batch_size"], hp["grad_accum"], hp["max_length"], hp["schedule"]) == (
                4, 8, 0.1, 1e-2, 42, 6, 2, 2, 128, "cosine")
    assert t["steps"] == 6
    for key in ("train_loss", "eval_loss", "eval_loss_initial", "wall_time_s", "tokens_per_s"):
        assert isinstance(t[key], float) and t[key] > 0, key
        assert m.metrics[key] == t[key]
    assert t["eval_loss"] < t["eval_loss_initial"]  # it learned the answer format
    assert t["tokens"] > 0 and 0 <= t["padding_fraction"] < 0.2
    assert t["software"]["peft"] and t["run_hash"]
    # re-running the finished command publishes nothing new
    again = train(_job(tiny_model_dir, data_file, result.run_dir, registry=registry_root), progress=False,
                  log=lambda _m: None)
    assert again.manifest.ref == "test-qa@1" and registry.versions("test-qa") == [1]


def test_loss_is_normalised_over_the_whole_step(tiny_model_dir, data_file, tmp_path):
    """4 sequences in one micro-batch == 2 micro-batches of 2 (gradient accumulation)."""
    over = {"dropout": 0.0, "max_steps": 2, "batching": "naive", "save_every": 0, "eval_fraction": 0}
    one = train(_job(tiny_model_dir, data_file, tmp_path / "one", batch_size=4, grad_accum=1, **over),
                progress=False, log=lambda _m: None)
    two = train(_job(tiny_model_dir, data_file, tmp_path / "two", batch_size=2, grad_accum=2, **over),
                progress=False, log=lambda _m: None)
    a, b = _weights(one.run_dir), _weights(two.run_dir)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6)


def test_packed_rows_give_the_same_loss_as_separate_examples(tokenizer, tiny_model_dir):
    """Position ids that restart per example make transformers mask attention across examples."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, attn_implementation="sdpa").eval()
    recs = [InstructionRecord.model_validate(r) for r in _records(3)]
    examples = [tokenize_record(tokenizer, r, 1024, "drop")[0] for r in recs]
    pad = tokenizer.pad_token_id
    with torch.no_grad():
        sep = [response_loss(model, batching.collate([[i]], examples, pad, packed=False)) for i in range(3)]
        packed_sum, packed_n = response_loss(model, batching.collate([[0, 1, 2]], examples, pad, packed=True))
        padded_sum, padded_n = response_loss(model, batching.collate([[0], [1], [2]], examples, pad, packed=False))
    total = sum(s for s, _ in sep)
    assert packed_n == padded_n == sum(n for _, n in sep) == sum(e.n_target for e in examples)
    torch.testing.assert_close(packed_sum, total, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(padded_sum, total, rtol=1e-4, atol=1e-4)


def test_killed_cli_run_resumes_with_the_same_command(tiny_model_dir, data_file, tmp_path):
    run_dir = tmp_path / "cli-run"
    cmd = [sys.executable, "-m", "bioinstruct.cli", "train", "--data", str(data_file), "--category", "QA",
           "--base-model", str(tiny_model_dir), "--out", str(run_dir), "--no-publish", "--quiet",
           "--max-length", "128", "--rank", "4", "--alpha", "8", "--batch-size", "2", "--grad-accum", "1",
           "--max-steps", "10", "--save-every", "2", "--eval-every", "0", "--lr", "1e-2"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for_checkpoint(proc, run_dir, 120)
        proc.send_signal(signal.SIGKILL)  # no chance to clean up
    finally:
        proc.wait(timeout=30)
    assert not (run_dir / "result.json").exists()
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "resuming from step-" in again.stdout
    summary = json.loads((run_dir / "result.json").read_text())
    assert summary["steps"] == 10
    # and it is the run an uninterrupted process makes
    reference = train(_job(tiny_model_dir, data_file, tmp_path / "ref", grad_accum=1, max_steps=10,
                           save_every=0, eval_every=0, dropout=0.05, eval_fraction=0.05),
                      progress=False, log=lambda _m: None)
    a, b = _weights(reference.run_dir), _weights(run_dir)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_two_process_ddp_equals_one_process_with_accumulation(tiny_model_dir, data_file, tmp_path):
    """torchrun, 2 CPU processes (gloo), 1 micro-batch each == 1 process accumulating 2 micro-batches."""
    common = ["--data", str(data_file), "--category", "QA", "--base-model", str(tiny_model_dir), "--no-publish",
              "--quiet", "--max-length", "128", "--rank", "4", "--alpha", "8", "--batch-size", "2", "--max-steps", "3",
              "--save-every", "2", "--eval-every", "0", "--dropout", "0", "--lr", "1e-2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533"]
    ddp = subprocess.run([*torchrun, "-m", "bioinstruct.cli", "train", *common, "--grad-accum", "1",
                          "--out", str(tmp_path / "ddp")], env=env, capture_output=True, text=True, timeout=300)
    assert ddp.returncode == 0, ddp.stdout[-3000:] + ddp.stderr[-3000:]
    assert "2 process(es)" in ddp.stdout
    assert {p.name for p in (tmp_path / "ddp" / "checkpoints" / "step-000002").glob("rng-*.pt")} == {
        "rng-0.pt", "rng-1.pt"}
    single = train(_job(tiny_model_dir, data_file, tmp_path / "single", grad_accum=2, max_steps=3, dropout=0.0,
                        eval_fraction=0.05, save_every=0, eval_every=0), progress=False, log=lambda _m: None)
    a, b = _weights(tmp_path / "ddp"), _weights(single.run_dir)
    # The same update up to float32 summation order (gloo's all-reduce vs accumulation, thread
    # counts). Compared per tensor by norm, not element by element: LoRA's A matrices get almost
    # no gradient in the first steps (B starts at zero) and Adam divides by its size, so single
    # near-zero elements can differ by 1e-6..1e-5 between equal runs (seen: 1 of 256). Weighting
    # the step's micro-batches wrongly moves whole tensors by percents.
    for key in a:
        rel = float((a[key] - b[key]).norm() / b[key].norm().clamp_min(1e-12))
        assert rel < 1e-3, (key, rel)


def test_two_processes_each_with_its_own_run_folder_stop_and_resume(tiny_model_dir, data_file, tmp_path):
    """Node-local disks: each of 2 processes (gloo) has its own run folder (`{rank}` in --out).
    Rank 0 alone writes checkpoints (the others' RNG gathered to it) and sends them back on
    resume; killed after a checkpoint and started again, the run ends where one process
    accumulating the same global batch does, and rank 1's folder never held any state."""
    common = ["--data", str(data_file), "--category", "QA", "--base-model", str(tiny_model_dir), "--no-publish",
              "--quiet", "--max-length", "128", "--rank", "4", "--alpha", "8", "--batch-size", "2", "--max-steps", "12",
              "--save-every", "2", "--eval-every", "0", "--dropout", "0", "--lr", "1e-2"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29534"]
    cmd = [*torchrun, "-m", "bioinstruct.cli", "train", *common, "--grad-accum", "1",
           "--out", str(tmp_path / "node-{rank}")]
    node0, node1 = tmp_path / "node-0", tmp_path / "node-1"
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        _wait_for_checkpoint(proc, node0, 240)
        # torchrun and both workers (which torchrun starts in sessions of their own), no clean-up
        for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            p.kill()
    finally:
        proc.wait(timeout=30)
    time.sleep(1)
    assert not (node0 / "result.json").exists(), "finished before it could be stopped"
    (first,) = sorted((node0 / "checkpoints").glob("step-*"))[-1:]
    assert {p.name for p in first.glob("rng-*.pt")} == {"rng-0.pt", "rng-1.pt"}
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from step-" in again.stdout
    assert json.loads((node0 / "result.json").read_text())["steps"] == 12
    assert not node1.exists() or not any(node1.rglob("*")), sorted(node1.rglob("*"))
    single = train(_job(tiny_model_dir, data_file, tmp_path / "single", grad_accum=2, max_steps=12, dropout=0.0,
                        eval_fraction=0.05, save_every=0, eval_every=0), progress=False, log=lambda _m: None)
    a, b = _weights(node0), _weights(single.run_dir)
    for key in a:  # as in the test above: the same update up to float32 summation order
        rel = float((a[key] - b[key]).norm() / b[key].norm().clamp_min(1e-12))
        assert rel < 1e-3, (key, rel)


def test_train_all_makes_one_adapter_per_family_and_one_on_all(tiny_model_dir, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from bioinstruct import settings
    from bioinstruct.cli import _register_subcommands, app

    monkeypatch.setenv("BIOINSTRUCT_HOME", str(tmp_path))
    settings.core_settings.cache_clear()
    data_dir = tmp_path / "data" / "train"
    data_dir.mkdir(parents=True)
    mixed = _records(12, "QA") + _records(12, "IE", 100) + _records(12, "GEN", 200)
    (data_dir / "all.jsonl").write_text("".join(json.dumps(r) + "\n" for r in mixed))
    (data_dir / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in _records(12, "QA")))
    _register_subcommands()
    try:
        res = CliRunner().invoke(app, [
            "train-all", "--base-model", str(tiny_model_dir), "--registry", str(tmp_path / "registry"), "--quiet",
            "--max-length", "128", "--rank", "4", "--batch-size", "2", "--grad-accum", "1", "--max-steps", "2",
            "--save-every", "0", "--eval-every", "0"])
    finally:
        settings.core_settings.cache_clear()
    assert res.exit_code == 0, res.output
    registry = Registry(tmp_path / "registry")
    assert {a: r.target for a, r in registry.aliases().items()} == {
        "qa": "bioinstruct-qa@1", "ie": "bioinstruct-ie@1", "gen": "bioinstruct-gen@1", "all": "bioinstruct-all@1"}
    by_cat = {m.category: m for m in registry.manifests()}
    assert set(by_cat) == {"QA", "IE", "GEN", "ALL"}
    assert by_cat["IE"].training["data"]["other_category_skipped"] == 24  # IE records of all.jsonl only
    assert by_cat["ALL"].training["data"]["records_read"] == 36
    report = json.loads((tmp_path / "runs" / "bioinstruct-train-all.json").read_text())
    assert [r["category"] for r in report["runs"]] == ["QA", "IE", "GEN", "ALL"]


def test_a_few_steps_on_the_embedded_model(base_model_dir, data_file, tmp_path):
    """The real base: peft targets exist, logits_to_keep works, the adapter is servable on an
    engine with LoRA on every layer and refused by one with LoRA on attention only."""
    from bioinstruct.adapter_files import check_adapter_folder
    from bioinstruct.registry import RegistryError

    cfg = load_config("cpu-smollm2", {"max_length": 160, "rank": 4, "batch_size": 2, "grad_accum": 1,
                                      "max_steps": 1, "save_every": 0, "eval_every": 0, "eval_fraction": 0,
                                      "target_modules": "all-linear", "engine_lora_modules": []})
    job = TrainJob(config=cfg, data_files=[data_file], category="QA", name="real-qa", run_dir=tmp_path / "run",
                   publish=False)
    result = train(job, progress=False, log=lambda _m: None)
    assert result.finished and 0 < result.summary["train_loss"] < 20
    base = inspect_base_model(base_model_dir)
    config = check_adapter_folder(result.adapter_dir, AdapterLimits(base_hidden_size=base.hidden_size, max_rank=16))
    assert set(config["target_modules"]) == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"}
    with pytest.raises(RegistryError, match=r"LoRA weights on \['down_proj', 'gate_up_proj'\]") as info:
        check_adapter_folder(result.adapter_dir, AdapterLimits(lora_modules=("qkv_proj", "o_proj")))
    assert info.value.code == "target_modules_unsupported"
    # the refusal names the way out and what it costs, as measured
    assert "BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES='[]'" in info.value.message
    assert "2.3x" in info.value.message and "docs/BENCHMARKS.md" in info.value.message
    assert not list(result.adapter_dir.glob("*.bin"))
