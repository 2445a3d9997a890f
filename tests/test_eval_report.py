"""Runs, reports, compare, gate, bench and the CLI, against a scripted stand-in for the gateway.

The stand-in (respx) answers in the gateway's response shapes with known answers, so the
scores are known in advance; it tests eval's own logic and files, not the service (the live
test in test_eval_live.py does that).
"""

from __future__ import annotations

import functools
import json
from pathlib import Path

import httpx
import pytest
import typer
from fake_hosts import fake_hosts_router
from typer.testing import CliRunner

from bioinstruct.eval.compare import compare_runs
from bioinstruct.eval.gate import GateOptions, run_gate
from bioinstruct.eval.load import BenchOptions, run_bench
from bioinstruct.eval.report import load_items, load_report
from bioinstruct.eval.runner import RunOptions, rescore, run_task
from bioinstruct.instruct.benchmark import PACKAGED_TASKS_DIR, TaskError, TaskSpec, load_task

URL = "http://gateway.test"


@functools.cache
def gold_answers(data_dir: Path) -> tuple[dict, dict]:
    gold_qa: dict[tuple[str, str], int] = {}
    gold_spans: dict[str, list] = {}
    for name in ("pubmedqa", "medqa"):
        task = load_task(name)
        for split in task.splits:
            for doc in task.load(split, data_dir):
                body = task.body(doc, None)
                gold_qa[(body["question"], str(body.get("context"))[:200])] = task.labels(doc).index(task.gold(doc))
    bc = load_task("bc5cdr")
    for doc in bc.load("test", data_dir):
        gold_spans[bc.body(doc, None)["text"]] = bc.gold(doc)
    return gold_qa, gold_spans


class FakeGateway:
    """'good' (and bioinstruct-qa@2) answers the gold, anything else a fixed wrong-ish answer."""

    def __init__(self, data_dir: Path, fail_every: int = 0) -> None:
        self.calls: list[dict] = []
        self.puts: list[dict] = []
        self.target = "bioinstruct-qa@1"
        self.fail_every = fail_every
        self.gold_qa, self.gold_spans = gold_answers(data_dir)

    def good(self, adapter: str | None) -> bool:
        return adapter in ("good", "bioinstruct-qa@2")

    def served(self, adapter):
        return {"adapter": adapter or "qa", "version": None, "model": adapter or "base",
                "usage": {"prompt_tokens": 50, "completion_tokens": 2, "total_tokens": 52}, "latency_ms": 3.0}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/admin/adapters":
            return httpx.Response(200, json={
                "versions": [{"ref": "bioinstruct-qa@1"}, {"ref": "bioinstruct-qa@2"}],
                "aliases": [{"alias": "qa", "target": self.target, "serving": self.target, "history": []}],
                "swaps": []})
        if path.startswith("/admin/aliases/") and request.method == "PUT":
            body = json.loads(request.content)
            self.puts.append(body)
            self.target = body["target"]
            return httpx.Response(200, json={"alias": "qa", "target": self.target, "serving": self.target,
                                             "history": []})
        body = json.loads(request.content)
        self.calls.append(body)
        if self.fail_every and len(self.calls) % self.fail_every == 0:
            return httpx.Response(400, json={"error": {"message": "bad input", "type": "invalid_request_error"}})
        adapter = body.get("adapter")
        if path == "/qa":
            gold = self.gold_qa.get((body["question"], str(body.get("context"))[:200]), 0)
            idx = gold if self.good(adapter) else 0
            return httpx.Response(200, json={"answer": body["options"][idx], "answer_index": idx, "method": "logprob",
                                             "scores": None, "raw_text": body["options"][idx], **self.served(adapter)})
        if path == "/extract":
            gold = self.gold_spans.get(body["text"], [])
            spans = gold if self.good(adapter) else gold[:1]
            ents = [{"text": body["text"][s:e], "type": t, "start": s, "end": e} for s, e, t in spans]
            return httpx.Response(200, json={"entities": ents, "relations": None, "dropped": 0, "raw_text": "",
                                             **self.served(adapter)})
        if path == "/generate":
            words = body["input"].split()[:6]
            events = [{"text": w + " "} for w in words]
            done = {"done": True, "finish_reason": "stop", "family": "GEN", **self.served(adapter)}
            text = "".join(f"data: {json.dumps(e)}\n\n" for e in [*events, done]) + "data: [DONE]\n\n"
            return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=text.encode())
        return httpx.Response(404, json={"error": {"message": "no such route", "type": "not_found_error"}})


@pytest.fixture
def fake(data_dir):
    gw = FakeGateway(data_dir)
    with fake_hosts_router(assert_all_called=False) as mock:
        mock.route(host="gateway.test").mock(side_effect=gw)
        gw.router = mock
        yield gw


def opts(task: str | TaskSpec, tmp_path: Path, data_dir: Path, **kw) -> RunOptions:
    spec = task if isinstance(task, TaskSpec) else load_task(task)
    defaults = dict(base_url=URL, out_dir=tmp_path / spec.name, limit=40, concurrency=4, data_dir=data_dir,
                    progress=False, n_boot=300, plots=False)
    defaults.update(kw)
    return RunOptions(task=spec, **defaults)


async def test_choice_run_writes_report_with_cis(fake, tmp_path, data_dir):
    run_dir = await run_task(opts("pubmedqa", tmp_path, data_dir, adapter="base", plots=True))
    for name in ("run.json", "records.jsonl", "items.jsonl", "report.json", "report.md", "scores.png",
                 "latency.png", "confusion.png", "f1_by_label.png"):
        assert (run_dir / name).is_file(), name
    report = load_report(run_dir)
    docs = load_task("pubmedqa").load("test", data_dir, limit=40)
    share_yes = sum(d.fields["final_decision"] == "yes" for d in docs) / 40  # base always answers "yes"
    assert 0.3 < share_yes < 0.9
    acc = report["scores"]["accuracy"]
    assert acc["value"] == pytest.approx(share_yes) and acc["n"] == 40
    assert acc["ci_low"] <= acc["value"] <= acc["ci_high"] and acc["ci_low"] < acc["ci_high"]
    assert report["scores"]["macro_f1"]["ci_low"] <= report["scores"]["macro_f1"]["value"]
    assert set(report["breakdown"]["f1_by_label"]) == {"f1[yes]", "f1[no]", "f1[maybe]"}
    assert report["breakdown"]["f1_by_label"]["f1[no]"]["value"] == 0.0
    sv = report["serving"]
    assert sv["errors"] == 0 and sv["served_models"] == {"base": 40}
    assert sv["latency_ms"]["e2e"]["p50"] is not None and sv["throughput"]["requests_per_s"] > 0
    md = (run_dir / "report.md").read_text()
    assert "accuracy (primary)" in md and f"{share_yes * 100:.1f} [" in md and "| 40 |" in md
    assert len(load_items(run_dir)) == 40
    assert all(c["adapter"] == "base" for c in fake.calls)


async def test_errors_count_as_wrong_and_are_reported(data_dir, tmp_path):
    gw = FakeGateway(data_dir, fail_every=4)
    with fake_hosts_router(assert_all_called=False) as mock:
        mock.route(host="gateway.test").mock(side_effect=gw)
        run_dir = await run_task(opts("pubmedqa", tmp_path, data_dir, adapter="good", concurrency=1))
    report = load_report(run_dir)
    assert report["serving"]["errors"] == 10 and report["serving"]["error_rate"] == 0.25
    assert report["scores"]["accuracy"]["value"] == pytest.approx(0.75)
    assert report["scores"]["accuracy"]["n"] == 40
    assert "bad input" in next(iter(report["serving"]["top_errors"]))


async def test_spans_and_streamed_text_runs(fake, tmp_path, data_dir):
    run_dir = await run_task(opts("bc5cdr", tmp_path, data_dir, adapter="good", limit=25))
    report = load_report(run_dir)
    assert report["scores"]["entity_f1"]["value"] == 1.0
    assert set(report["breakdown"]["entity_f1_by_type"]) == {"f1[Chemical]", "f1[Disease]"}

    run_dir = await run_task(opts("bc5cdr", tmp_path, data_dir, adapter="base", limit=25, out_dir=tmp_path / "b"))
    s = load_report(run_dir)["scores"]
    assert s["entity_precision"]["value"] == 1.0 and s["entity_recall"]["value"] < 1.0

    run_dir = await run_task(opts("mediqa_qs", tmp_path, data_dir, adapter="base", limit=10))
    report = load_report(run_dir)
    assert set(report["scores"]) == {"rougeL", "rouge1", "rouge2"}  # no judge configured: no judge score
    assert 0 < report["scores"]["rougeL"]["value"] < 1
    assert report["serving"]["latency_ms"]["ttft"]["p50"] is not None
    assert all(c["stream"] is True for c in fake.calls if "instruction" in c)


async def test_resume_sends_only_missing_items_and_refuses_another_run(fake, tmp_path, data_dir):
    await run_task(opts("medqa", tmp_path, data_dir, adapter="base", limit=10))
    assert len(fake.calls) == 10
    run_dir = await run_task(opts("medqa", tmp_path, data_dir, adapter="base", limit=25))
    assert len(fake.calls) == 25
    assert load_report(run_dir)["n_items"] == 25
    assert len((run_dir / "records.jsonl").read_text().splitlines()) == 25
    with pytest.raises(TaskError, match="another run"):
        await run_task(opts("medqa", tmp_path, data_dir, adapter="good", limit=25))
    before = load_report(run_dir)["scores"]
    again = rescore(run_dir, data_dir, n_boot=300)
    assert again["scores"] == before


async def test_compare_paired_bootstrap(fake, tmp_path, data_dir):
    a = await run_task(opts("pubmedqa", tmp_path, data_dir, adapter="base", out_dir=tmp_path / "a"))
    b = await run_task(opts("pubmedqa", tmp_path, data_dir, adapter="good", out_dir=tmp_path / "b"))
    result = compare_runs(a, b, n_boot=500)
    acc = result["metrics"]["accuracy"]
    assert acc["b"] == 1.0 and acc["delta"] == pytest.approx(1.0 - acc["a"])
    assert acc["ci_low"] > 0 and acc["p_value"] < 0.05 and acc["n"] == 40
    assert result["n_paired"] == 40 and not result["warnings"]
    # Against itself: no difference.
    same = compare_runs(a, a, n_boot=200)["metrics"]["accuracy"]
    assert same["delta"] == 0 and same["ci_low"] == same["ci_high"] == 0


async def test_gate_promotes_only_a_better_candidate(fake, tmp_path, data_dir):
    def gate_opts(**kw):
        base = dict(alias="qa", candidate="2", task=load_task("pubmedqa"), base_url=URL, admin_token="t",
                    limit=30, data_dir=data_dir, progress=False, n_boot=300, plots=False)
        base.update(kw)
        return GateOptions(**base)

    rejected = await run_gate(gate_opts(min_delta=0.99, out_dir=tmp_path / "g1"))
    assert rejected["decision"] == "rejected" and fake.puts == []
    assert rejected["split"] == "dev" and rejected["n"] == 30
    assert (tmp_path / "g1" / "gate.json").is_file() and (tmp_path / "g1" / "gate.md").is_file()

    dry = await run_gate(gate_opts(min_delta=0.05, dry_run=True, out_dir=tmp_path / "g2"))
    assert dry["decision"] == "would_promote" and fake.puts == []

    promoted = await run_gate(gate_opts(min_delta=0.05, require_significant=True, out_dir=tmp_path / "g3"))
    assert promoted["decision"] == "promoted", promoted
    assert promoted["current"] == "bioinstruct-qa@1" and promoted["candidate"] == "bioinstruct-qa@2"
    assert fake.puts == [{"target": "bioinstruct-qa@2"}]
    pinned = {c.get("adapter") for c in fake.calls}
    assert pinned == {"bioinstruct-qa@1", "bioinstruct-qa@2"}  # versions pinned, never the alias

    noop = await run_gate(gate_opts(out_dir=tmp_path / "g4"))
    assert noop["decision"] == "noop"


async def test_gate_refuses_unknown_candidate(fake, tmp_path, data_dir):
    from bioinstruct.eval.gate import GateError

    with pytest.raises(GateError, match="not in the registry"):
        await run_gate(GateOptions(alias="qa", candidate="bioinstruct-qa@9", task=load_task("pubmedqa"),
                                   base_url=URL, admin_token="t", data_dir=data_dir, progress=False))
    with pytest.raises(GateError, match="admin token"):
        await run_gate(GateOptions(alias="qa", candidate="2", task=load_task("pubmedqa"), base_url=URL,
                                   admin_token=None, data_dir=data_dir, progress=False))


async def test_bench_sweep_mixed_adapters(fake, tmp_path, data_dir):
    out = await run_bench(BenchOptions(
        base_url=URL, tasks=[load_task(n) for n in ("pubmedqa", "bc5cdr", "mediqa_qs")], adapters=["base", "good"],
        concurrencies=[1, 3], num_requests=12, slo_e2e_ms=60_000, data_dir=data_dir, out_dir=tmp_path / "bench",
        progress=False))
    report = json.loads((out / "bench.json").read_text())
    assert [lv["level"] for lv in report["levels"]] == [1, 3]
    for lv in report["levels"]:
        assert lv["completed"] == 12 and lv["error_rate"] == 0
        assert lv["request_throughput"] > 0 and lv["goodput"] <= lv["request_throughput"] + 1e-9
        assert set(lv["by_route"]) == {"qa", "extract", "generate"}
        assert lv["streamed"] == 4 and lv["ttft_ms"]["median"] is not None and lv["tpot_ms"]["median"] is not None
        assert lv["served_models"] == {"base": 6, "good": 6}
    assert (out / "bench.png").is_file() and "goodput" in (out / "bench.md").read_text()
    rate = await run_bench(BenchOptions(base_url=URL, tasks=[load_task("pubmedqa")], rates=[50.0], num_requests=5,
                                        data_dir=data_dir, out_dir=tmp_path / "bench-rate", progress=False,
                                        warmup=False))
    assert json.loads((rate / "bench.json").read_text())["config"]["mode"] == "rate"


def _cli() -> typer.Typer:
    from bioinstruct.eval.cli import register

    app = typer.Typer()

    @app.command("noop")
    def _noop() -> None:  # a second command, so that typer keeps group names
        pass

    register(app)
    return app


def test_cli_eval_compare_and_bench(fake, tmp_path, data_dir, monkeypatch):
    monkeypatch.setenv("BIOINSTRUCT_EVAL_BASE_URL", URL)
    monkeypatch.setenv("BIOINSTRUCT_DATA_DIR", str(data_dir))
    app, runner = _cli(), CliRunner()
    res = runner.invoke(app, ["eval", "--task", "pubmedqa", "--adapter", "base", "--limit", "8", "--out",
                              str(tmp_path / "a"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert "accuracy" in res.output and (tmp_path / "a" / "report.md").is_file()
    res = runner.invoke(app, ["eval", "--task", "pubmedqa", "--adapter", "good", "--limit", "8", "--out",
                              str(tmp_path / "b"), "--no-progress", "--no-plots"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "compare", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                              str(tmp_path / "cmp")])
    assert res.exit_code == 0, res.output
    assert "B − A" in res.output and (tmp_path / "cmp" / "compare.json").is_file()
    res = runner.invoke(app, ["eval", "report", str(tmp_path / "a"), "--no-plots"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "list"])
    assert res.exit_code == 0 and "chemprot" in res.output
    res = runner.invoke(app, ["load", "--task", "pubmedqa", "--concurrency", "1,2", "--num-requests", "3",
                              "--out", str(tmp_path / "bench"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "bench" / "bench.json").is_file()
    res = runner.invoke(app, ["eval", "gate", "--alias", "qa", "--candidate", "2", "--task", "pubmedqa",
                              "--limit", "10", "--admin-token", "t", "--min-delta", "0.01",
                              "--no-progress", "--no-plots", "--out", str(tmp_path / "gate")])
    assert res.exit_code == 0, res.output
    assert "promoted" in res.output
    res = runner.invoke(app, ["eval", "--task", "nosuch"])
    assert res.exit_code == 2 and "known tasks" in res.output


async def test_llm_judge_score_through_an_openai_compatible_endpoint(fake, tmp_path, data_dir):
    from bioinstruct.eval.judge import JudgeConfig

    seen: list[dict] = []

    def judge(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        seen.append(body)
        score = "7" if len(seen) % 2 else "Score: 9/10"
        return httpx.Response(200, json={"choices": [{"index": 0, "message": {"role": "assistant", "content": score}}]})

    fake.router.post("http://judge.test/v1/chat/completions").mock(side_effect=judge)
    run_dir = await run_task(opts("meqsum_heldout", tmp_path, data_dir, adapter="base", limit=4,
                                  judge=JudgeConfig(url="http://judge.test/v1", model="big-model")))
    report = load_report(run_dir)
    assert report["scores"]["llm_judge"]["value"] == pytest.approx(8.0) and report["scores"]["llm_judge"]["n"] == 4
    assert len(seen) == 4 and seen[0]["model"] == "big-model"
    assert "Reference summary" in seen[0]["messages"][0]["content"]
    assert (run_dir / "judge.jsonl").is_file()
    assert rescore(run_dir, data_dir, n_boot=300, plots=False)["scores"]["llm_judge"]["value"] == pytest.approx(8.0)


@pytest.fixture
def error_rate():
    """A new metric, added the one way there is: one registration (here lower-is-better, not in %)."""
    from bioinstruct.eval.metrics import METRICS, Accuracy, register_metric

    class ErrorRate(Accuracy):
        def __init__(self) -> None:
            super().__init__()
            self.name = "error_rate"

        def value(self, sums):
            return 1 - super().value(sums)

    register_metric("error_rate", output_type="choice", higher_is_better=False, percent=False)(
        lambda ctx: [ErrorRate()])
    yield
    METRICS.pop("error_rate")


async def test_a_registered_metric_is_run_reported_compared_and_gated(fake, error_rate, tmp_path, data_dir):
    text = (PACKAGED_TASKS_DIR / "pubmedqa.yaml").read_text()
    old = "metrics: [accuracy, macro_f1, f1_by_label]\n  primary: accuracy"
    assert old in text
    path = tmp_path / "tasks" / "pubmedqa_err.yaml"
    path.parent.mkdir()
    path.write_text(text.replace("name: pubmedqa", "name: pubmedqa_err")
                    .replace(old, "metrics: [error_rate, accuracy]\n  primary: error_rate"))
    task = load_task(path)
    run_dir = await run_task(opts(task, tmp_path, data_dir, adapter="base"))
    report = load_report(run_dir)
    err, acc = report["scores"]["error_rate"], report["scores"]["accuracy"]
    assert err["value"] == pytest.approx(1 - acc["value"]) and err["n"] == 40
    assert f"| error_rate (primary) | {err['value']:.2f} [" in (run_dir / "report.md").read_text()  # not in %

    better = await run_task(opts(task, tmp_path, data_dir, adapter="good", out_dir=tmp_path / "b"))
    delta = compare_runs(run_dir, better, n_boot=300)["metrics"]["error_rate"]["delta"]
    assert delta == pytest.approx(-err["value"])

    # The gate reads higher_is_better: the candidate's error rate falls, which is the gain it asks for.
    result = await run_gate(GateOptions(alias="qa", candidate="2", task=task, base_url=URL, admin_token="t",
                                        limit=30, data_dir=data_dir, progress=False, n_boot=300, plots=False,
                                        min_delta=0.05, require_significant=True, out_dir=tmp_path / "gate"))
    assert result["metric"] == "error_rate" and result["delta"] < 0
    assert result["decision"] == "promoted", result
