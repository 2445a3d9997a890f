"""The Self-Instruct loop: prompt a chat model with random seed tasks, keep the good new ones.

For a target count n: draw examples (seeds, optionally mixed with accepted tasks), ask an
OpenAI-compatible endpoint for a batch of new tasks, parse them, filter them, drop any
whose instruction has ROUGE-L F > threshold against the pool so far (seeds + accepted),
label the category, and append each survivor to the output JSONL at once. Requests run
concurrently (a fixed number of workers) with retries and backoff on 429, 5xx, timeouts
and connection errors. The output file is the state: a re-run recovers it (dropping a
partial last line) and continues until the file holds exactly n records.

Decisions and writes happen between awaits, on the event loop's single thread, so no two
responses interleave their dedup checks and writes.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import random
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openai
from openai import AsyncOpenAI
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    wait_exponential_jitter,
)

from bioinstruct.generation.dedup import RougeDeduper
from bioinstruct.generation.filters import FilterConfig, first_rejection
from bioinstruct.generation.labeling import label_category
from bioinstruct.generation.parsing import ParsedTask, parse_response
from bioinstruct.generation.prompting import ExampleTask, build_messages, draw_examples, prompt_hash
from bioinstruct.generation.settings import GenerationSettings
from bioinstruct.generation.stats import GenerationStats, RunCounters
from bioinstruct.generation.store import RecordStore, write_json_atomic
from bioinstruct.instruct.records import InstructionRecord

SOURCE = "self-instruct"
# Answers that no retry or other prompt will change: stop the run and say what to fix.
FATAL_STATUSES = (401, 403, 404)


class GenerationError(RuntimeError):
    """The run cannot go on (endpoint refuses every request, bad model name or key...)."""


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code in (408, 409, 429) or exc.status_code >= 500
    return False


class _Backoff:
    """Retry-After when the server sends one (capped), else exponential backoff with jitter."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.maximum = maximum
        self._exp = wait_exponential_jitter(initial=initial, max=maximum, jitter=initial)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        response = getattr(exc, "response", None)
        if response is not None:
            value = response.headers.get("retry-after")
            try:
                if value is not None:
                    return min(max(float(value), 0.0), self.maximum)
            except ValueError:
                pass
        return self._exp(state)


def record_id(instruction: str, input_text: str) -> str:
    digest = hashlib.sha256(f"{instruction.strip()}\x00{input_text.strip()}".encode()).hexdigest()
    return f"si-{digest[:16]}"


def stats_path(out: Path) -> Path:
    return out.with_name(out.name + ".stats.json")


def rejected_path(out: Path) -> Path:
    return out.with_name(out.name + ".rejected.jsonl")


class SelfInstructLoop:
    def __init__(
        self,
        settings: GenerationSettings,
        seeds: Sequence[ExampleTask],
        out: Path,
        n: int,
        *,
        show_progress: bool = True,
        client: AsyncOpenAI | None = None,
        retry_initial_s: float = 1.0,
        retry_max_s: float = 30.0,
        keep_rejected: bool = True,
    ) -> None:
        if not seeds:
            raise GenerationError("no seed tasks to prompt with")
        if n < 1:
            raise GenerationError("--n must be at least 1")
        self.settings = settings
        self.seeds = list(seeds)
        self._send_seed = True  # per-request seeds, until the endpoint refuses them
        self.seed_refused = False
        self._seed_ids = {t.id for t in self.seeds}
        self.out = out
        self.n = n
        self.show_progress = show_progress
        self.client = client
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self.keep_rejected = keep_rejected
        self.filter_config = FilterConfig(
            min_instruction_words=settings.min_instruction_words,
            max_instruction_words=settings.max_instruction_words,
            max_output_words=settings.max_output_words,
        )
        self.counters = RunCounters()
        self._previous = RunCounters()
        self._runs = 1
        self._records: list[InstructionRecord] = []
        self._ids: set[str] = set()
        self._categories: Counter[str] = Counter()
        self._sources: Counter[str] = Counter()
        self._done = asyncio.Event()
        self._requests_started = 0
        self._resumed_from = 0
        self._budget = settings.request_budget(n)
        self._deduper = RougeDeduper(settings.rouge_threshold)
        self._consecutive_failures = 0
        self._t0 = 0.0
        self._progress: Any = None
        self._bar: Any = None

    # --- state ----------------------------------------------------------------------------

    def _load_previous_stats(self) -> None:
        path = stats_path(self.out)
        if not path.exists():
            return
        try:
            data = json.loads(path.read_text())
            total = dict(data.get("total", {}))
            total.pop("rates", None)
            self._previous = RunCounters.model_validate(total)
            self._runs = int(data.get("runs", 0)) + 1
        except (ValueError, TypeError):
            self._previous, self._runs = RunCounters(), 1

    def stats(self, stop_reason: str = "") -> GenerationStats:
        self.counters.elapsed_s = time.monotonic() - self._t0 if self._t0 else 0.0
        s = self.settings
        return GenerationStats(
            out=str(self.out), model=s.model, base_url=s.base_url, requested=self.n,
            records_in_file=len(self._records), resumed_from=self._resumed_from,
            complete=len(self._records) >= self.n, stop_reason=stop_reason,
            categories=dict(sorted(self._categories.items())),
            category_source=dict(sorted(self._sources.items())), runs=self._runs,
            this_run=self.counters.model_copy(deep=True), total=self._previous.plus(self.counters),
            settings=s.model_dump(mode="json", exclude={"api_key"}),
        )

    def _save_stats(self, stop_reason: str = "") -> GenerationStats:
        stats = self.stats(stop_reason)
        write_json_atomic(stats_path(self.out), stats.to_json())
        return stats

    # --- requests -------------------------------------------------------------------------

    def _client(self) -> AsyncOpenAI:
        if self.client is None:
            self.client = AsyncOpenAI(
                base_url=self.settings.base_url, api_key=self.settings.api_key.get_secret_value() or "EMPTY",
                timeout=self.settings.request_timeout_s, max_retries=0,
            )
        return self.client

    async def _request(self, messages: list[dict[str, str]], seed: int) -> Any:
        s = self.settings

        def count_retry(state: RetryCallState) -> None:
            self.counters.retries += 1

        retrying = AsyncRetrying(
            stop=stop_after_attempt(s.max_retries + 1),
            wait=_Backoff(self.retry_initial_s, self.retry_max_s),
            retry=retry_if_exception(is_retryable),
            before_sleep=count_retry,
            reraise=True,
        )
        def create(**extra: Any) -> Any:
            return self._client().chat.completions.create(
                model=s.model, messages=messages, temperature=s.temperature, top_p=s.top_p,
                max_tokens=s.max_tokens, **extra,
            )

        async for attempt in retrying:
            with attempt:
                if not self._send_seed:
                    return await create()
                try:
                    return await create(seed=seed)
                except openai.BadRequestError as exc:
                    # Servers that refuse `seed` (our service on its CPU engine) still work:
                    # drop it for the rest of the run and ask again at once.
                    if "seed" not in str(exc):
                        raise
                    self._send_seed = False
                    self.seed_refused = True
                    return await create()
        raise AssertionError("unreachable")

    # --- one response ---------------------------------------------------------------------

    def _reject(self, task: ParsedTask, reason: str, meta: dict[str, Any]) -> None:
        self.counters.reject(reason)
        if self.keep_rejected:
            line = json.dumps({"reason": reason, **task.model_dump(), "prompt_hash": meta["prompt_hash"]},
                              ensure_ascii=False)
            with rejected_path(self.out).open("a", encoding="utf-8") as fh:
                fh.write(line + "\n")

    def _process(self, response: Any, examples: Sequence[ExampleTask], messages: list[dict[str, str]],
                 store: RecordStore) -> None:
        choice = response.choices[0] if response.choices else None
        text = (choice.message.content or "") if choice else ""
        finish = choice.finish_reason if choice else None
        usage = getattr(response, "usage", None)
        if usage is not None:
            self.counters.prompt_tokens += usage.prompt_tokens or 0
            self.counters.completion_tokens += usage.completion_tokens or 0
        self.counters.finish(finish)
        parsed = parse_response(text, finish)
        self.counters.tasks_parsed += len(parsed.tasks)
        meta = {
            "prompt_hash": prompt_hash(messages),
            "seed_ids": [e.id for e in examples if e.id in self._seed_ids],
            "generated_example_ids": [e.id for e in examples if e.id not in self._seed_ids],
        }
        candidates: list[ParsedTask] = []
        for task in parsed.tasks:
            reason = first_rejection(task, self.filter_config)
            if reason:
                self._reject(task, reason, meta)
            else:
                candidates.append(task)
        if not candidates:
            return
        decisions = self._deduper.filter([t.instruction for t in candidates])
        now = datetime.now(UTC).isoformat(timespec="seconds")
        for task, (keep, score, _) in zip(candidates, decisions, strict=True):
            rid = record_id(task.instruction, task.input)
            if not keep or rid in self._ids:
                self._reject(task, "rouge_duplicate", meta)
                continue
            if len(self._records) >= self.n:
                self.counters.surplus += 1
                continue
            family, source = label_category(task, use_model=self.settings.label_with_model)
            record = InstructionRecord(
                id=rid, instruction=task.instruction, input=task.input, output=task.output,
                category=family, task_type=None,
                provenance={
                    "source": SOURCE, "seed_ids": meta["seed_ids"],
                    "generated_example_ids": meta["generated_example_ids"],
                    "model": self.settings.model, "response_model": getattr(response, "model", None),
                    "prompt_hash": meta["prompt_hash"], "request_id": getattr(response, "id", None),
                    "temperature": self.settings.temperature, "finish_reason": finish,
                    "position": task.position, "category_source": source,
                    "model_category": task.category, "max_rouge_l": round(score, 4), "created": now,
                },
            )
            store.append(record)
            self._records.append(record)
            self._ids.add(rid)
            self._categories[family.value] += 1
            self._sources[source] += 1
            self.counters.accepted += 1
        if len(self._records) >= self.n:
            self._done.set()

    # --- workers --------------------------------------------------------------------------

    async def _worker(self, store: RecordStore, rng: random.Random) -> None:
        s = self.settings
        generated = self._records
        while not self._done.is_set() and self._requests_started < self._budget:
            self._requests_started += 1
            examples = draw_examples(rng, self.seeds, generated, s.num_examples, s.mix_generated)
            messages = build_messages(examples, s.batch_size)
            seed = rng.randrange(2**31)
            try:
                response = await self._request(messages, seed)
            except openai.APIStatusError as exc:
                if exc.status_code in FATAL_STATUSES:
                    raise GenerationError(f"{s.base_url} answered {exc.status_code}: {exc.message} "
                                          "(check --model, --api-key and --base-url)") from None
                self._failed(exc)  # retries spent, or a 4xx about this one prompt (e.g. too long)
            except (openai.APITimeoutError, openai.APIConnectionError) as exc:
                self._failed(exc)
            else:
                self._consecutive_failures = 0
                self.counters.requests += 1
                self._process(response, examples, messages, store)
            self._save_stats()
            self._update_progress()

    def _failed(self, exc: BaseException) -> None:
        self.counters.requests += 1
        self.counters.failed_requests += 1
        self._consecutive_failures += 1
        limit = max(5, 2 * self.settings.concurrency)
        if self._consecutive_failures >= limit:
            raise GenerationError(f"{self._consecutive_failures} requests in a row failed after retries "
                                  f"(last: {type(exc).__name__}: {exc}); is {self.settings.base_url} up?")

    def _update_progress(self) -> None:
        if self._bar is None:
            return
        elapsed = max(time.monotonic() - self._t0, 1e-9)
        self._progress.update(
            self._bar, completed=len(self._records), rejected=self.counters.rejected_total,
            rps=self.counters.requests / elapsed, apm=60 * self.counters.accepted / elapsed,
        )

    async def run(self) -> GenerationStats:
        s = self.settings
        self._load_previous_stats()
        with RecordStore(self.out, fsync=s.fsync) as store:
            self._records = store.recover()
            self._resumed_from = len(self._records)
            self._ids = {r.id for r in self._records}
            for r in self._records:
                self._categories[r.category.value] += 1
                self._sources[str(r.provenance.get("category_source", "unknown"))] += 1
            self._deduper = RougeDeduper(s.rouge_threshold)
            self._deduper.add([t.instruction for t in self.seeds])
            self._deduper.add([r.instruction for r in self._records])
            self._t0 = time.monotonic()
            if len(self._records) >= self.n:
                return self._save_stats("already complete")
            rng = random.Random(f"{s.seed}:{len(self._records)}")
            stop_reason = ""
            try:
                with self._progress_bar():
                    stop_reason = await self._run_workers(store, rng)
            finally:
                stats = self._save_stats(stop_reason or "interrupted")
            return stats

    async def _run_workers(self, store: RecordStore, rng: random.Random) -> str:
        workers = [asyncio.create_task(self._worker(store, random.Random(rng.random())))
                   for _ in range(self.settings.concurrency)]
        pending: set[asyncio.Task[None]] = set(workers)
        error: BaseException | None = None
        try:
            while pending and not self._done.is_set():
                finished, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in finished:
                    if task.exception() is not None:
                        error = task.exception()
                if error is not None:
                    break
        finally:
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        if error is not None:
            raise error
        if self._done.is_set():
            return "done"
        return f"request budget reached ({self._budget} requests)"

    def _progress_bar(self):
        from contextlib import nullcontext

        if not self.show_progress:
            return nullcontext()
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        self._progress = Progress(
            TextColumn("[bold]generate"), BarColumn(), MofNCompleteColumn(), TextColumn("accepted"),
            TextColumn("[red]{task.fields[rejected]} rejected"),
            TextColumn("{task.fields[rps]:.2f} req/s"), TextColumn("{task.fields[apm]:.1f} accepted/min"),
            TimeElapsedColumn(), transient=False,
        )
        self._bar = self._progress.add_task("generate", total=self.n, completed=len(self._records),
                                            rejected=0, rps=0.0, apm=0.0)
        return self._progress
