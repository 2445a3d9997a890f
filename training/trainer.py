"""The training loop: LoRA SFT with peft, in plain PyTorch under `accelerate`.

One code path for CPU, one GPU, DDP and FSDP (`accelerate launch` / torchrun): the
Accelerator owns device placement, mixed precision and gradient synchronisation; every
process builds the same batch plan and takes its share of each optimizer step.

Exactness: the batch order is a function of (seed, epoch); checkpoints hold the LoRA
weights, optimizer, scheduler and RNG states and the step; the loss is normalised by the
number of response tokens of the whole optimizer step (not per micro-batch), so gradient
accumulation and data parallelism give the same update as one big batch.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bioinstruct.instruct.families import Category
from bioinstruct.registry import CATEGORIES, Manifest, RegistryError, check_name
from bioinstruct.settings import CoreSettings, apply_offline_env
from bioinstruct.training import batching
from bioinstruct.training import checkpoint as ckpt
from bioinstruct.training.config import TrainConfig, stable_hash
from bioinstruct.training.data import IGNORE_INDEX, Example, TrainingData, load_training_data

RUN_FORMAT = 1


class TrainError(RuntimeError):
    """Training cannot start or continue; the message says what to change."""


@dataclass
class TrainJob:
    """One adapter to train: config, data, and where it goes."""

    config: TrainConfig
    data_files: list[Path]
    category: Category = "ALL"  # the CLI upper-cases and checks what a user typed
    name: str | None = None  # registry adapter name; default bioinstruct-<category>
    run_dir: Path | None = None  # default <home>/runs/<name>-<config hash>
    publish: bool = True
    alias: str | None = None
    registry: str | None = None  # default CoreSettings().registry
    description: str | None = None

    def __post_init__(self) -> None:
        self.category = self.category.upper()
        if self.category not in CATEGORIES:
            raise TrainError(f"category {self.category!r} is not one of {list(CATEGORIES)}")
        if self.name is None:
            self.name = f"bioinstruct-{self.category.lower()}"
        self.data_files = [Path(p).expanduser().resolve() for p in self.data_files]


@dataclass
class RunResult:
    run_dir: Path
    finished: bool
    adapter_dir: Path | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    manifest: Manifest | None = None
    resumed_from: int | None = None


# --- step plan ------------------------------------------------------------------------------

class StepPlan:
    """Maps a global optimizer step to the micro-batches of every process."""

    def __init__(self, examples: list[Example], cfg: TrainConfig, world_size: int) -> None:
        self.examples = examples
        self.lengths = [e.length for e in examples]
        self.cfg = cfg
        self.world = world_size
        self.group = cfg.grad_accum * world_size
        self._plans: dict[int, list[batching.MicroBatch]] = {}
        if self.steps_in_epoch(0) == 0:
            raise TrainError(
                f"{len(examples)} training examples make {len(self.plan(0))} micro-batches, fewer than "
                f"grad_accum x processes = {self.group}: lower batch_size or grad_accum, or add data"
            )

    def plan(self, epoch: int) -> list[batching.MicroBatch]:
        if epoch not in self._plans:
            if len(self._plans) > 4:
                self._plans.pop(min(self._plans))
            self._plans[epoch] = batching.plan_epoch(
                self.lengths, mode=self.cfg.batching, batch_size=self.cfg.batch_size,
                max_length=self.cfg.max_length, seed=self.cfg.seed, epoch=epoch,
            )
        return self._plans[epoch]

    def steps_in_epoch(self, epoch: int) -> int:
        n = len(self.plan(epoch))
        if self.world == 1:
            return math.ceil(n / self.group)  # a short last step is fine on one process
        return n // self.group  # every process needs the same number of micro-batches

    def total_steps(self) -> int:
        if self.cfg.max_steps:
            return self.cfg.max_steps
        whole, frac = int(self.cfg.epochs), self.cfg.epochs - int(self.cfg.epochs)
        total = sum(self.steps_in_epoch(e) for e in range(whole))
        if frac > 1e-9:
            total += max(1, math.ceil(frac * self.steps_in_epoch(whole)))
        return max(1, total)

    def locate(self, step: int) -> tuple[int, int]:
        epoch = 0
        while step >= (n := self.steps_in_epoch(epoch)):
            step -= n
            epoch += 1
        return epoch, step

    def step_batches(self, step: int) -> list[batching.MicroBatch]:
        epoch, index = self.locate(step)
        return self.plan(epoch)[index * self.group : (index + 1) * self.group]

    def epoch_float(self, step: int) -> float:
        epoch, index = self.locate(step)
        return epoch + index / max(1, self.steps_in_epoch(epoch))


def lr_factor(step: int, *, warmup: int, total: int, schedule: str) -> float:
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))


# --- the loss -----------------------------------------------------------------------------

def response_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, int]:
    """(sum of token losses over response tokens, number of response tokens).

    Logits are computed only at positions whose next token is a response token
    (`logits_to_keep`): for QA most of a sequence is prompt, and the vocabulary projection
    is a large share of a small model's compute.
    """
    labels = batch["labels"]
    targets = torch.full_like(labels, IGNORE_INDEX)
    targets[:, :-1] = labels[:, 1:]
    keep = (targets != IGNORE_INDEX).any(dim=0).nonzero().squeeze(-1)
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    out = model(**inputs, logits_to_keep=keep, use_cache=False)
    logits = out.logits.float()
    picked = targets[:, keep]
    loss_sum = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), picked.reshape(-1),
                               ignore_index=IGNORE_INDEX, reduction="sum")
    return loss_sum, int((picked != IGNORE_INDEX).sum())


# --- the run ------------------------------------------------------------------------------

def default_run_dir(core: CoreSettings, name: str, run_hash: str) -> Path:
    return core.home / "runs" / f"{name}-{run_hash[:8]}"


def train(
    job: TrainJob,
    *,
    progress: bool = True,
    log: Callable[[str], None] = print,
    stop_after_step: int | None = None,
) -> RunResult:
    """Train (or resume, or find finished) one adapter; publish it if asked. Idempotent."""
    run = _Run(job, log)
    if run.finished_on_rank0():
        return run.already_finished()
    run.build_model()
    run.resume()
    if not run.run_steps(progress, stop_after_step):
        return RunResult(run.run_dir, False, resumed_from=run.resumed_from)
    return run.finish()


class _Run:
    """One training run, step by step: set up (accelerator, data, run folder), build the model,
    resume from the last checkpoint, run the optimizer steps, finish (adapter, summary, publish).
    Every process of a distributed run holds one; `main` does the writing."""

    def __init__(self, job: TrainJob, log: Callable[[str], None]) -> None:
        apply_offline_env()
        import accelerate
        from accelerate.utils import DistributedType
        from transformers import AutoTokenizer
        from transformers.utils import logging as hf_logging

        from bioinstruct.model import BaseModelError, inspect_base_model

        hf_logging.disable_progress_bar()  # our own bar is the one that matters
        self.job = job
        self.cfg = cfg = job.config
        core = CoreSettings()
        self.base_dir = Path(cfg.base_model).expanduser().resolve() if cfg.base_model else core.base_model_dir
        check_name(job.name or "", "adapter name")
        if job.alias:
            check_name(job.alias, "alias")
        self.registry_url = job.registry or core.registry
        try:
            self.base = inspect_base_model(self.base_dir)
        except BaseModelError as exc:
            raise TrainError(str(exc)) from exc
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        # several processes (torchrun / accelerate launch) without a GPU: DDP over gloo on CPU
        cpu_ddp = int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.cuda.is_available()
        self.accelerator = accelerate.Accelerator(
            mixed_precision={"fp32": "no", "bf16": "bf16", "fp16": "fp16"}[cfg.precision], cpu=cpu_ddp,
        )
        if cfg.deterministic and self.accelerator.device.type == "cuda":  # CPU kernels are deterministic already
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.main = self.accelerator.is_main_process
        self.world, self.rank = self.accelerator.num_processes, self.accelerator.process_index
        self.fsdp = self.accelerator.distributed_type == DistributedType.FSDP
        self.say = log if self.main else (lambda _msg: None)

        tokenizer = AutoTokenizer.from_pretrained(self.base_dir)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.data: TrainingData = load_training_data(
            tokenizer, job.data_files, max_length=cfg.max_length, overlong=cfg.overlong,
            eval_fraction=cfg.eval_fraction, eval_max_examples=cfg.eval_max_examples,
            exclude_ids_file=cfg.exclude_ids_file, category=job.category, data_format=cfg.data_format,
        )
        self.run_hash = stable_hash({
            "format": RUN_FORMAT, "config": cfg.hash_payload(), "data": self.data.fingerprint(),
            "base": self.base.fingerprint, "category": job.category, "world_size": self.world,
        })
        run_dir = job.run_dir or default_run_dir(core, job.name or "", self.run_hash)
        # "{rank}" in the path gives each process its own folder (what node-local disks are; rank
        # 0's holds the run, the others' stay empty): checkpoints never need a shared disk.
        self.run_dir = Path(str(run_dir).replace("{rank}", str(self.rank))).expanduser().resolve()
        self.ckpt_root = self.run_dir / "checkpoints"
        self.result_path = self.run_dir / "result.json"
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._claim_run_folder()

    def _claim_run_folder(self) -> None:
        """An existing run folder must be this run; a new one gets run.json."""
        config_path = self.run_dir / "run.json"
        if config_path.is_file():
            existing = json.loads(config_path.read_text())
            if existing.get("run_hash") != self.run_hash:
                raise TrainError(
                    f"run folder {self.run_dir} holds another run (config, data, base model or process count "
                    "differ): pick another --run-name, or delete that folder to start over"
                )
        run_info = {
            "run_hash": self.run_hash, "name": self.job.name, "category": self.job.category,
            "base_model": self.base.path, "base_model_fingerprint": self.base.fingerprint,
            "config": self.cfg.model_dump(mode="json"), "data_files": [f.as_dict() for f in self.data.files],
            "data_stats": self.data.stats, "world_size": self.world,
        }
        if self.main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            if not config_path.is_file():
                ckpt.write_json_atomic(config_path, run_info)
        self.accelerator.wait_for_everyone()

    def finished_on_rank0(self) -> bool:
        """Whether the run finished, as rank 0's folder says (every process agrees)."""
        done = [self.result_path.is_file()]
        if self.world > 1:
            from accelerate.utils import broadcast_object_list

            broadcast_object_list(done, from_process=0)
        return bool(done[0])

    def already_finished(self) -> RunResult:
        if not self.main:  # its folder may be another disk's: rank 0 reports
            self.accelerator.wait_for_everyone()
            return RunResult(self.run_dir, True, self.run_dir / "adapter", {}, None)
        summary = json.loads(self.result_path.read_text())
        self.say(f"run {self.run_dir.name} already finished (train loss {summary.get('train_loss')}, "
                 f"eval loss {summary.get('eval_loss')}); not training again")
        manifest = self._publish(summary) if self.main else None
        self.accelerator.wait_for_everyone()
        return RunResult(self.run_dir, True, self.run_dir / "adapter", summary, manifest)

    def build_model(self) -> None:
        from accelerate.utils import set_seed
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        cfg, stats = self.cfg, self.data.stats
        self.say(f"run folder {self.run_dir}")
        self.say(f"data: {stats['train_examples']} train / {stats['eval_examples']} held-out examples, "
                 f"{stats['train_tokens']} train tokens ({stats['train_target_tokens']} response), "
                 f"{stats['dropped_overlong']} dropped, {stats['truncated_input']} truncated to "
                 f"max_length={cfg.max_length}")
        set_seed(cfg.seed)  # LoRA init is identical on every process and every run
        dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[cfg.precision]
        model = AutoModelForCausalLM.from_pretrained(self.base_dir, dtype=dtype,
                                                     attn_implementation=cfg.attn_implementation)
        model.config.use_cache = False
        if cfg.gradient_checkpointing:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        lora = LoraConfig(
            r=cfg.rank, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
            bias="none", task_type="CAUSAL_LM",
        )
        model = get_peft_model(model, lora)
        self.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total_params = sum(p.numel() for p in model.parameters())
        set_seed(cfg.seed + self.rank)  # dropout differs between processes, reproducibly

        self.model = self.accelerator.prepare(model)
        optimizer = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=cfg.learning_rate, weight_decay=cfg.weight_decay,
        )
        self.optimizer = self.accelerator.prepare(optimizer)
        self.plan = StepPlan(self.data.train, cfg, self.world)
        self.total_steps = total = self.plan.total_steps()
        warmup = int(round(cfg.warmup_ratio * total))
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer.optimizer if hasattr(self.optimizer, "optimizer") else self.optimizer,
            lambda s: lr_factor(s, warmup=warmup, total=total, schedule=cfg.schedule),
        )
        self.eval_batches = _eval_batches(self.data.eval, cfg.batch_size)
        self.say(f"model: {self.base_dir.name}, LoRA r={cfg.rank} alpha={cfg.alpha} on {cfg.target_modules}: "
                 f"{self.trainable:,} trainable of {total_params:,} parameters; {self.world} process(es) on "
                 f"{self.accelerator.device}, {cfg.precision}; {total} steps of "
                 f"{cfg.batch_size}x{cfg.grad_accum}x{self.world} sequences ({cfg.batching})")

    def resume(self) -> None:
        """From the last complete checkpoint of this run, if there is one; metrics.jsonl is cut back to it."""
        self.counters = {"tokens": 0, "target_tokens": 0, "train_time_s": 0.0, "wall_time_s": 0.0, "padding_tokens": 0}
        self.start_step = 0
        self.resumed_from: int | None = None
        self.history: list[dict[str, Any]] = []
        if self.main:
            ckpt.clean_partial(self.ckpt_root)
        self.accelerator.wait_for_everyone()
        if self.fsdp:
            self._resume_fsdp()
        else:
            self._resume_from_rank0()
        if self.main:
            with self.metrics_path.open("w") as fh:
                for rec in self.history:
                    fh.write(json.dumps(rec) + "\n")

    def _resume_from_rank0(self) -> None:
        """Rank 0 reads its last checkpoint and sends it to every process (each may have its own
        disk and run folder): weights, optimizer, scheduler, each process's RNG, counters, and
        the metrics history up to that step."""
        from accelerate.utils import broadcast_object_list

        payload: list[Any] = [None]
        if self.main:
            last = ckpt.latest_checkpoint(self.ckpt_root)
            if last is not None:
                payload = [ckpt.read_checkpoint(last, self.world)]
                if payload[0]["state"].get("run_hash") != self.run_hash:
                    payload = [{"error": f"checkpoint {last} belongs to another run; delete {self.ckpt_root} "
                                         "to start over"}]
                else:
                    payload[0]["history"] = _read_jsonl(self.metrics_path)
        if self.world > 1:
            broadcast_object_list(payload, from_process=0)
        found = payload[0]
        if found is None:
            return
        if "error" in found:
            raise TrainError(found["error"])
        ckpt.load_trainable_state(self.accelerator.unwrap_model(self.model), found["weights"])
        self.optimizer.load_state_dict(found["optimizer"])
        self.scheduler.load_state_dict(found["scheduler"])
        ckpt.set_rng_state(found["rng"][self.rank])
        self._resumed(found["name"], found["state"], found["history"])

    def _resume_fsdp(self) -> None:
        """FSDP's shards are saved and loaded by every process: one folder all of them see."""
        last = ckpt.latest_checkpoint(self.ckpt_root)
        if last is None:
            return
        state = ckpt.read_state(last)
        if state.get("run_hash") != self.run_hash:
            raise TrainError(f"checkpoint {last} belongs to another run; delete {self.ckpt_root} to start over")
        self.accelerator.load_state(str(last / "accelerate"))
        self.scheduler.load_state_dict(torch.load(last / "scheduler.pt", weights_only=True))
        ckpt.set_rng_state(torch.load(last / f"rng-{self.rank}.pt", weights_only=True))
        self._resumed(last.name, state, _read_jsonl(self.metrics_path))

    def _resumed(self, name: str, state: dict[str, Any], history: list[dict[str, Any]]) -> None:
        self.start_step = self.resumed_from = int(state["step"])
        self.counters.update(state["counters"])
        self.say(f"resuming from {name} (step {self.start_step} of {self.total_steps})")
        self.history = [r for r in history if r.get("step", 0) <= self.start_step]

    def log_record(self, rec: dict[str, Any]) -> None:
        self.history.append(rec)
        if self.main:
            with self.metrics_path.open("a") as fh:
                fh.write(json.dumps(rec) + "\n")

    def evaluate(self) -> float | None:
        """Mean response-token loss on the held-out examples, over every process."""
        if not self.data.eval:
            return None
        model, device, world = self.model, self.accelerator.device, self.world
        model.eval()
        total = torch.zeros(2, dtype=torch.float64, device=device)
        mine = self.eval_batches[self.rank::world]
        rounds = math.ceil(len(self.eval_batches) / world)
        with torch.no_grad():
            for j in range(rounds):  # same number of forwards on every process (FSDP needs it)
                real = j < len(mine)
                mb = mine[j] if real else self.eval_batches[0]
                batch = _to_device(batching.collate(mb, self.data.eval, self.pad_id, self.cfg.batching == "pack"),
                                   device)
                loss_sum, n = response_loss(model, batch)
                if real:
                    total += torch.tensor([loss_sum.item(), n], dtype=torch.float64, device=device)
        total = self.accelerator.reduce(total, reduction="sum")
        model.train()
        return float(total[0] / max(1.0, float(total[1])))

    def save_checkpoint(self, step: int) -> None:
        accelerator, main = self.accelerator, self.main
        tmp = ckpt.tmp_dir(self.ckpt_root, step)
        if main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        accelerator.wait_for_everyone()
        if self.fsdp:
            torch.save(ckpt.rng_state(), tmp / f"rng-{self.rank}.pt")
            accelerator.save_state(str(tmp / "accelerate"))
        else:
            from accelerate.utils import gather_object

            # Every process's RNG to rank 0, which alone writes: no process needs rank 0's disk.
            states = gather_object([ckpt.rng_state()]) if self.world > 1 else [ckpt.rng_state()]
            if main:
                for rank, rng in enumerate(states):
                    torch.save(rng, tmp / f"rng-{rank}.pt")
                ckpt.save_weights(accelerator.unwrap_model(self.model), tmp / ckpt.WEIGHTS)
                torch.save(self.optimizer.state_dict(), tmp / "optimizer.pt")
        accelerator.wait_for_everyone()
        if main:
            torch.save(self.scheduler.state_dict(), tmp / "scheduler.pt")
            ckpt.finalize(self.ckpt_root, step, {"step": step, "run_hash": self.run_hash, "counters": self.counters,
                                                 "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                          keep=self.cfg.keep_checkpoints)
        accelerator.wait_for_everyone()

    def train_step(self, step: int) -> dict[str, Any]:
        """One optimizer step (this process's share of its micro-batches); its metrics record."""
        accelerator, device, world, data, plan = (
            self.accelerator, self.accelerator.device, self.world, self.data, self.plan)
        t0 = time.monotonic()
        group = plan.step_batches(step)
        mine = group[self.rank::world]
        n_target = sum(batching.target_tokens(mb, data.train) for mb in group)
        local = torch.zeros(3, dtype=torch.float64, device=device)  # loss sum, tokens, padding
        for j, mb in enumerate(mine):
            batch = _to_device(batching.collate(mb, data.train, self.pad_id, self.cfg.batching == "pack"), device)
            real, pad = batching.batch_shape(mb, plan.lengths)
            sync = j == len(mine) - 1
            with nullcontext() if sync else accelerator.no_sync(self.model):
                loss_sum, _n = response_loss(self.model, batch)
                # sum over tokens / tokens of the whole step; x world because DDP/FSDP average
                accelerator.backward(loss_sum * (world / n_target))
            local += torch.tensor([loss_sum.item(), real, pad], dtype=torch.float64, device=device)
        grad_norm = None
        if self.cfg.max_grad_norm:
            grad_norm = float(accelerator.clip_grad_norm_(self._params, self.cfg.max_grad_norm))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        summed = accelerator.reduce(local, reduction="sum") if world > 1 else local
        dt = time.monotonic() - t0
        tokens = int(summed[1])
        self.counters["tokens"] += tokens
        self.counters["target_tokens"] += n_target
        self.counters["padding_tokens"] += int(summed[2])
        self.counters["train_time_s"] += dt
        return {"step": step + 1,
                "epoch": round(plan.epoch_float(step) + 1 / max(1, plan.steps_in_epoch(plan.locate(step)[0])), 4),
                "loss": float(summed[0]) / n_target, "lr": lr, "grad_norm": grad_norm, "tokens": tokens,
                "target_tokens": n_target, "tokens_per_s": tokens / dt if dt > 0 else None}

    def run_steps(self, progress: bool, stop_after_step: int | None) -> bool:
        """The optimizer steps from where the run stands; False when stopped early (stop_after_step)."""
        cfg, total = self.cfg, self.total_steps
        self.model.train()
        self._params = [p for p in self.model.parameters() if p.requires_grad]
        segment_start, wall_base = time.monotonic(), self.counters["wall_time_s"]
        self._wall = lambda: wall_base + time.monotonic() - segment_start
        if self.start_step == 0 and self.data.eval:
            initial = self.evaluate()
            self.log_record({"step": 0, "eval_loss": initial})
            self.say(f"eval loss before training: {initial:.4f}")
        bar = _progress_bar(total, self.start_step, enabled=progress and self.main)
        for step in range(self.start_step, total):
            rec = self.train_step(step)
            self.counters["wall_time_s"] = self._wall()
            done = rec["step"]
            if done % cfg.log_every == 0 or done == total:
                self.log_record(rec)
            tok_s = rec["tokens_per_s"] or 0.0
            bar.set_postfix(loss=f"{rec['loss']:.3f}", tok_s=f"{tok_s:.0f}", lr=f"{rec['lr']:.2e}", refresh=False)
            bar.update(1)
            if self.data.eval and cfg.eval_every and done % cfg.eval_every == 0 and done < total:
                ev = self.evaluate()
                self.log_record({"step": done, "eval_loss": ev})
                bar.write(f"step {done}: eval loss {ev:.4f}") if self.main else None
            if cfg.save_every and done % cfg.save_every == 0 and done < total:
                self.counters["wall_time_s"] = self._wall()
                self.save_checkpoint(done)
            if stop_after_step is not None and done >= stop_after_step and done < total:
                bar.close()
                return False
        bar.close()
        return True

    def finish(self) -> RunResult:
        """The last evaluation, the adapter folder (atomically), metrics, loss plot, result.json, publish."""
        accelerator, say = self.accelerator, self.say
        final_eval = self.evaluate()
        if final_eval is not None:
            self.log_record({"step": self.total_steps, "eval_loss": final_eval})
        self.counters["wall_time_s"] = self._wall()
        adapter_dir = self.run_dir / "adapter"
        state_dict = accelerator.get_state_dict(self.model) if self.fsdp else None
        summary: dict[str, Any] = {}
        manifest = None
        if self.main:
            tmp = self.run_dir / ".adapter-tmp"
            if tmp.exists():
                shutil.rmtree(tmp)
            kwargs = {"state_dict": state_dict} if state_dict is not None else {}
            accelerator.unwrap_model(self.model).save_pretrained(str(tmp), safe_serialization=True, **kwargs)
            if adapter_dir.exists():
                shutil.rmtree(adapter_dir)
            os.rename(tmp, adapter_dir)
            summary = _summary(self.history, self.counters, self.cfg, self.plan, self.total_steps, self.trainable,
                               self.world, accelerator, final_eval)
            summary.update(run_hash=self.run_hash, run_dir=str(self.run_dir))
            ckpt.write_json_atomic(self.run_dir / "metrics.json", summary)
            try:
                from bioinstruct.training.plots import plot_loss_curves

                plot_loss_curves(self.history, self.run_dir / "loss.png",
                                 f"{self.job.name} ({self.job.category}) on {self.base_dir.name}")
            except Exception as exc:  # a plot must never lose a finished run
                say(f"warning: could not draw loss.png: {exc}")
            ckpt.write_json_atomic(self.result_path, summary)  # written last: marks the run finished
            say(f"finished: train loss {summary['train_loss']:.4f}, eval loss {summary['eval_loss']}, "
                f"{summary['tokens_per_s']:.0f} tokens/s, {summary['wall_time_s']:.0f} s; adapter {adapter_dir}")
            manifest = self._publish(summary)
        accelerator.wait_for_everyone()
        return RunResult(self.run_dir, True, adapter_dir, summary, manifest, self.resumed_from)

    def _publish(self, summary: dict[str, Any]) -> Manifest | None:
        return _publish_if_asked(self.job, self.run_dir, summary, self.base, self.registry_url, self.cfg, self.say)


# --- helpers ------------------------------------------------------------------------------

def _eval_batches(examples: list[Example], batch_size: int) -> list[batching.MicroBatch]:
    order = sorted(range(len(examples)), key=lambda i: (-examples[i].length, i))
    return [[[i] for i in order[s : s + batch_size]] for s in range(0, len(order), batch_size)]


def _to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device, non_blocking=True) for k, v in batch.items()}


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut by a kill
    return out


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, disable=not enabled, desc="train", unit="step", dynamic_ncols=True)


def _summary(history, counters, cfg, plan, total_steps, trainable, world, accelerator, final_eval) -> dict[str, Any]:
    losses = [r["loss"] for r in history if "loss" in r]
    evals = [r["eval_loss"] for r in history if "eval_loss" in r]
    tail = losses[-max(1, min(10, len(losses) // 5 or 1)):]
    return {
        "steps": total_steps,
        "epochs": round(
            plan.epoch_float(total_steps - 1) + 1 / max(1, plan.steps_in_epoch(plan.locate(total_steps - 1)[0])), 4),
        "train_loss": sum(tail) / len(tail) if tail else None,
        "train_loss_first": losses[0] if losses else None,
        "eval_loss": final_eval,
        "eval_loss_initial": evals[0] if evals else None,
        "tokens": counters["tokens"],
        "target_tokens": counters["target_tokens"],
        "padding_fraction": counters["padding_tokens"] / max(1, counters["tokens"] + counters["padding_tokens"]),
        "train_time_s": counters["train_time_s"],
        "wall_time_s": counters["wall_time_s"],
        "tokens_per_s": counters["tokens"] / max(1e-9, counters["train_time_s"]),
        "trainable_parameters": trainable,
        "world_size": world,
        "device": str(accelerator.device),
        "torch_threads": torch.get_num_threads(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _publish_if_asked(job: TrainJob, run_dir: Path, summary: dict[str, Any], base, registry_url: str,
                      cfg: TrainConfig, say) -> Manifest | None:
    from bioinstruct.training.publish import publish_run

    if not job.publish:
        say(f"not published (--no-publish); the adapter is in {run_dir / 'adapter'}")
        return None
    try:
        return publish_run(job, run_dir, summary, base, registry_url, cfg, say)
    except RegistryError as exc:
        raise TrainError(f"training finished but publishing failed: {exc.message}. The adapter is in "
                         f"{run_dir / 'adapter'}; re-run the same command to publish it") from exc
