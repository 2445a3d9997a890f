"""The Self-Instruct loop against fake OpenAI-compatible endpoints (a local HTTP server, respx),
and once against the real service.

The fakes test the loop's own behaviour (exact counts, provenance, stats, retries, resume after
kill -9) and claim nothing about the service; `test_loop_against_the_real_service` goes through
the gateway and vLLM. The 200-record run against the service is in docs/GENERATION.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bioinstruct.generation.dedup import dedup_fast
from bioinstruct.generation.loop import GenerationError, SelfInstructLoop, rejected_path, stats_path
from bioinstruct.generation.prompting import PromptExample
from bioinstruct.generation.settings import GenerationSettings
from bioinstruct.generation.store import read_records
from tests.fake_server import FakeChatServer

ROOT = Path(__file__).resolve().parents[1]
SEEDS = [
    PromptExample(id="seed-qa-1", category="QA", instruction="What is the first-line drug for type 2 diabetes?",
                  output="Metformin."),
    PromptExample(id="seed-ie-1", category="IE", instruction="Extract every drug mentioned in the sentence.",
                  input="The patient was started on aspirin and clopidogrel.", output="aspirin\nclopidogrel"),
    PromptExample(id="seed-gen-1", category="GEN", instruction="Summarize the clinical note in one sentence.",
                  input="72-year-old man with COPD admitted for dyspnea; discharged on day 4.",
                  output="An elderly man with COPD was treated for an exacerbation and discharged."),
    PromptExample(id="seed-gen-2", category="GEN", instruction="Explain to a patient what an HbA1c test measures.",
                  output="Your average blood sugar over the past three months."),
]


def settings(base_url: str, **kw) -> GenerationSettings:
    kw.setdefault("concurrency", 3)
    kw.setdefault("batch_size", 4)
    return GenerationSettings(base_url=base_url, model="fake", api_key="k", **kw)


def run(loop: SelfInstructLoop):
    return asyncio.run(loop.run())


def test_loop_writes_exactly_n_valid_records_with_provenance_and_stats(tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeChatServer(seed=1) as server:
        stats = run(SelfInstructLoop(settings(server.base_url, mix_generated=1), SEEDS, out, 30,
                                     show_progress=False, retry_initial_s=0.01))
    records = list(read_records(out))
    assert len(records) == 30 == stats.records_in_file and stats.complete
    assert len({r.id for r in records}) == 30
    assert all(dedup_fast([r.instruction for r in records]))  # no pair above 0.7
    p = records[-1].provenance
    assert p["source"] == "self-instruct" and p["model"] == "fake" and len(p["prompt_hash"]) == 16
    assert set(p["seed_ids"]) <= {s.id for s in SEEDS} and p["created"]
    assert p["category_source"] in ("model", "rules")
    assert any(r.provenance["generated_example_ids"] for r in records)  # mixed-in accepted tasks
    assert sum(stats.categories.values()) == 30
    assert stats.this_run.accepted == 30 and stats.this_run.requests >= 8
    assert stats.this_run.prompt_tokens > 0 and stats.this_run.completion_tokens > 0
    assert stats.this_run.rejected  # the fake server sends rejects by design
    saved = json.loads(stats_path(out).read_text())
    assert saved["records_in_file"] == 30 and saved["this_run"]["rates"]["requests_per_s"] > 0
    reasons = {json.loads(line)["reason"] for line in rejected_path(out).read_text().splitlines()}
    assert reasons <= set(stats.total.rejected)
    # a second run on a complete file does nothing
    stats2 = run(SelfInstructLoop(settings("http://127.0.0.1:9/v1"), SEEDS, out, 30, show_progress=False))
    assert stats2.stop_reason == "already complete" and stats2.runs == 2 and stats2.this_run.requests == 0


REPLY = ("4. Instruction: Explain the mechanism of action of warfarin.\nInput: <noinput>\n"
         "Output: It blocks vitamin K epoxide reductase.\nCategory: GEN\n\n"
         "5. Instruction: Name the enzyme inhibited by statins in the liver.\nInput: <noinput>\n"
         "Output: HMG-CoA reductase.")


def test_retries_on_429_5xx_and_timeouts_then_succeeds(tmp_path):
    out = tmp_path / "gen.jsonl"
    # The timeout leaves a busy machine room for the answers that are not the stall (a 0.5 s one
    # timed out an ordinary answer once during a full suite: 4 retries instead of 3).
    with FakeChatServer(script=[429, 503, "stall", REPLY], stall_s=4.0) as server:
        loop = SelfInstructLoop(settings(server.base_url, concurrency=1, request_timeout_s=1.5), SEEDS, out, 2,
                                show_progress=False, retry_initial_s=0.01, retry_max_s=0.05)
        stats = run(loop)
        assert server.requests == 4
    assert stats.complete and stats.this_run.retries == 3 and stats.this_run.failed_requests == 0
    records = list(read_records(out))
    assert [r.instruction for r in records] == ["Explain the mechanism of action of warfarin.",
                                                "Name the enzyme inhibited by statins in the liver."]
    assert records[0].category.value == "GEN" and records[0].provenance["category_source"] == "model"
    assert records[1].category.value == "QA" and records[1].provenance["category_source"] == "rules"


def test_a_request_that_keeps_failing_is_counted_and_the_run_goes_on(tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeChatServer(script=[500, 500, REPLY]) as server:
        stats = run(SelfInstructLoop(settings(server.base_url, concurrency=1, max_retries=1), SEEDS, out, 2,
                                     show_progress=False, retry_initial_s=0.01))
    assert stats.complete and stats.this_run.failed_requests == 1 and stats.this_run.requests == 2


def test_non_retryable_error_stops_the_run_with_a_clear_message(tmp_path):
    with FakeChatServer(script=[404] * 10) as server, pytest.raises(GenerationError, match="404.*--model"):
        run(SelfInstructLoop(settings(server.base_url), SEEDS, tmp_path / "g.jsonl", 5, show_progress=False))


def test_endpoint_down_stops_after_consecutive_failures(tmp_path):
    with pytest.raises(GenerationError, match="in a row failed"):
        run(SelfInstructLoop(settings("http://127.0.0.1:9/v1", max_retries=0, concurrency=2), SEEDS,
                             tmp_path / "g.jsonl", 5, show_progress=False))


def test_request_budget_stops_a_run_that_cannot_finish(tmp_path):
    junk = "4. Instruction: Look at the image and describe it.\nInput: <noinput>\nOutput: A cell."
    with FakeChatServer(script=[junk] * 6) as server:
        stats = run(SelfInstructLoop(settings(server.base_url, max_requests=6), SEEDS,
                                     tmp_path / "g.jsonl", 5, show_progress=False))
    assert not stats.complete and "budget" in stats.stop_reason
    assert stats.this_run.requests == 6 and stats.this_run.rejected == {"blacklisted": 6}


def _count_lines(path: Path) -> int:
    try:
        return path.read_bytes().count(b"\n")
    except FileNotFoundError:
        return 0


def _generate_cmd(base_url: str, seeds: Path, out: Path, n: int) -> list[str]:
    return [sys.executable, "-m", "generation", "generate", "--n", str(n), "--out", str(out),
            "--base-url", base_url, "--model", "fake", "--seeds", str(seeds), "--concurrency", "4",
            "--batch-size", "3", "--no-progress", "--seed", "5"]


def test_resume_after_kill_9_ends_with_exactly_n_unique_records(tmp_path):
    n = 45
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(s.model_dump_json() + "\n" for s in SEEDS))
    out = tmp_path / "gen.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with FakeChatServer(delay=0.3, seed=3) as server:
        cmd = _generate_cmd(server.base_url, seeds, out, n)
        kills = 0
        for kill_after in (6, 21):  # kill -9 while records are being written
            proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            deadline = time.monotonic() + 60
            while _count_lines(out) < kill_after and proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            assert proc.poll() is None, proc.stderr.read().decode()[-2000:]
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
            kills += 1
            lines = _count_lines(out)
            assert kill_after <= lines < n
        # as if a kill had landed in the middle of a write: a partial last line
        with out.open("ab") as fh:
            fh.write(b'{"id": "si-partial", "instruction": "Explain the')
        done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    data = out.read_bytes()
    assert data.endswith(b"\n")
    lines = data.decode().splitlines()
    assert len(lines) == n
    records = [json.loads(line) for line in lines]  # every line is complete JSON
    assert len({r["id"] for r in records}) == n
    assert "si-partial" not in {r["id"] for r in records}
    assert all(dedup_fast([r["instruction"] for r in records]))  # dedup held across runs
    stats = json.loads(stats_path(out).read_text())
    assert stats["records_in_file"] == n and stats["complete"] and stats["runs"] == kills + 1
    assert stats["resumed_from"] >= 21
    assert "accepted" in done.stdout and "Rejected by reason" in done.stdout


def test_a_rejected_prompt_is_a_failed_request_not_the_end_of_the_run(tmp_path):
    with FakeChatServer(script=[400, REPLY]) as server:
        stats = run(SelfInstructLoop(settings(server.base_url, concurrency=1), SEEDS, tmp_path / "g.jsonl", 2,
                                     show_progress=False))
    assert stats.complete and stats.this_run.failed_requests == 1 and stats.this_run.retries == 0


def test_loop_drops_seed_once_the_endpoint_refuses_it(tmp_path):
    """A unit test of the loop: an endpoint that answers 400 to `seed` (some OpenAI-compatible
    servers do; this gateway did on its CPU engine before our vLLM plugin fixed the crash) must
    not stop it."""
    out = tmp_path / "gen.jsonl"
    with FakeChatServer(seed=2, refuse_seed=True) as server:
        loop = SelfInstructLoop(settings(server.base_url, concurrency=1), SEEDS, out, 8,
                                show_progress=False, retry_initial_s=0.01)
        stats = run(loop)
    assert stats.complete and len(list(read_records(out))) == 8
    assert loop.seed_refused and server.seeded_requests == 1  # asked once with a seed, never again
    assert stats.this_run.requests == server.requests  # the refused request is not counted as served


def test_loop_sends_seeds_where_accepted(tmp_path):
    out = tmp_path / "gen.jsonl"
    with FakeChatServer(seed=3) as server:
        loop = SelfInstructLoop(settings(server.base_url, concurrency=1), SEEDS, out, 6,
                                show_progress=False, retry_initial_s=0.01)
        run(loop)
    assert not loop.seed_refused and server.seeded_requests == server.requests > 0


@pytest.mark.engine
def test_loop_against_the_real_service(live_service, tmp_path):
    """The one test here that goes through the real engine: the gateway's /v1 on the embedded
    model. A 135M model's acceptance is low (14% in docs/GENERATION.md), so this checks the path,
    not a count: every request answered with its seed (the CPU engine serves seeded requests),
    tokens counted, replies parsed, and whatever was accepted is a valid record from model "base"."""
    out = tmp_path / "gen.jsonl"
    gen = GenerationSettings(base_url=f"{live_service.base_url}/v1", model="base", api_key="k",
                             concurrency=3, batch_size=3, max_tokens=160, max_requests=3)
    loop = SelfInstructLoop(gen, SEEDS, out, 20, show_progress=False)
    stats = run(loop)
    assert stats.this_run.requests == 3 and stats.this_run.failed_requests == 0
    assert not loop.seed_refused  # seeds are served (bioinstruct/vllm_plugin/cpu_seed.py)
    assert stats.this_run.completion_tokens > 0 and stats.this_run.prompt_tokens > 0
    assert stats.this_run.tasks_parsed > 0
    assert (stats.this_run.accepted + stats.this_run.rejected_total + stats.this_run.surplus
            == stats.this_run.tasks_parsed)
    records = list(read_records(out)) if out.exists() else []
    assert len(records) == stats.this_run.accepted
    assert all(r.provenance["model"] == "base" and r.instruction for r in records)
    assert stats_path(out).exists()
