"""Quality gate: move an alias to a candidate version only if it beats the current one on a dev split.

1. Read the alias's current target from the gateway's admin API (no alias yet: the base model).
2. Run the task's dev split on the current version and on the candidate, each pinned by
   `<name>@<version>` so that a swap during the run cannot mix versions.
3. Paired bootstrap of the primary metric: candidate - current.
4. Promote (PUT /admin/aliases/{alias}) only when the difference is at least --min-delta
   (and, with --require-significant, the CI's lower bound is above 0), both runs' error
   rates are within bounds, and the alias still points where it did when the gate began.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

import httpx

from bioinstruct.eval.compare import compare_runs
from bioinstruct.eval.metrics import metric_spec
from bioinstruct.eval.runner import RunOptions, ScoredOptions, run_dir_name, run_task
from bioinstruct.registry import REF_RE


class GateError(RuntimeError):
    pass


@dataclass(kw_only=True)
class GateOptions(ScoredOptions):
    alias: str
    candidate: str
    admin_token: str | None
    min_delta: float = 0.0
    require_significant: bool = False
    max_error_rate: float = 0.02
    dry_run: bool = False


def _admin(opts: GateOptions) -> httpx.Client:
    if not opts.admin_token:
        raise GateError("the gate needs the gateway's admin token: --admin-token or BIOINSTRUCT_ADMIN_TOKEN")
    return httpx.Client(base_url=opts.base_url.rstrip("/"), timeout=120.0, transport=opts.transport,
                        headers={"Authorization": f"Bearer {opts.admin_token}"})


def _error(resp: httpx.Response) -> str:
    try:
        return resp.json()["error"]["message"]
    except (ValueError, KeyError, TypeError):
        return resp.text[:300]


def read_state(client: httpx.Client) -> dict[str, Any]:
    resp = client.get("/admin/adapters")
    if resp.status_code != 200:
        raise GateError(f"GET /admin/adapters: HTTP {resp.status_code}: {_error(resp)}")
    return resp.json()


def alias_target(state: dict[str, Any], alias: str) -> str | None:
    for rec in state.get("aliases") or []:
        if rec.get("alias") == alias:
            return rec.get("target")
    return None


def resolve_candidate(candidate: str, current: str | None, state: dict[str, Any]) -> str:
    """'bioinstruct-qa@3' as is; a bare version number takes the current target's adapter name."""
    if re.fullmatch(r"\d+", candidate):
        if current is None:
            raise GateError(f"candidate {candidate!r} is a bare version but the alias has no current "
                            f"target to take the adapter name from: give <name>@<version>")
        candidate = f"{current.split('@', 1)[0]}@{candidate}"
    if not REF_RE.match(candidate):
        raise GateError(f"candidate {candidate!r} is not <name>@<version> or a version number")
    refs = {v.get("ref") for v in state.get("versions") or []}
    if candidate not in refs:
        raise GateError(f"candidate {candidate} is not in the registry; versions: {', '.join(sorted(refs)) or 'none'}")
    return candidate


async def run_gate(opts: GateOptions) -> dict[str, Any]:
    split = opts.split or opts.task.dev_split
    if split is None:
        raise GateError(f"task {opts.task.name} has no dev split; pass --split (never gate on a test split "
                        f"you report)")
    with _admin(opts) as admin:
        state = read_state(admin)
        current = alias_target(state, opts.alias)
        candidate = resolve_candidate(opts.candidate, current, state)
        baseline = current or "base"
        out = opts.out_dir or (opts.reports_root or Path("reports")) / run_dir_name(
            f"gate-{opts.alias}-{opts.task.name}", candidate)
        result: dict[str, Any] = {
            "alias": opts.alias, "task": opts.task.name, "split": split, "current": baseline,
            "candidate": candidate, "min_delta": opts.min_delta, "require_significant": opts.require_significant,
            "dry_run": opts.dry_run, "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": opts.command,
        }
        if candidate == current:
            result.update(decision="noop", reason=f"alias {opts.alias} already points at {candidate}")
            _write(out, result)
            return result

        runs = {}
        shared = {f.name: getattr(opts, f.name) for f in fields(ScoredOptions)}
        for role, adapter in (("current", baseline), ("candidate", candidate)):
            runs[role] = await run_task(RunOptions(
                **{**shared, "split": split, "out_dir": out / role}, adapter=adapter,
                extra_config={"gate": opts.alias, "role": role}))
        cmp = compare_runs(runs["current"], runs["candidate"], n_boot=opts.n_boot, seed=opts.seed)
        primary = cmp["primary_metric"]
        stat = cmp["metrics"][primary]
        result.update(metric=primary, current_score=stat["a"], candidate_score=stat["b"], delta=stat["delta"],
                      ci_low=stat["ci_low"], ci_high=stat["ci_high"], p_value=stat["p_value"], n=stat["n"],
                      runs={k: str(v) for k, v in runs.items()},
                      error_rates={"current": cmp["a"]["error_rate"], "candidate": cmp["b"]["error_rate"]})

        reasons = []
        for role in ("current", "candidate"):
            if result["error_rates"][role] > opts.max_error_rate:
                reasons.append(f"the {role} run's error rate {result['error_rates'][role]:.1%} is above "
                               f"{opts.max_error_rate:.1%}: the comparison is not trustworthy")
        # A gain is a rise of a higher-is-better metric, a fall of a lower-is-better one.
        spec = metric_spec(primary)
        sign = 1 if spec is None or spec.higher_is_better else -1
        gain = None if stat["delta"] is None else sign * stat["delta"]
        if gain is None or gain < opts.min_delta:
            reasons.append(f"{primary} {'delta' if sign > 0 else 'decrease'} {gain} is below the required "
                           f"{opts.min_delta}")
        worst = None if stat["ci_low"] is None else min(sign * stat["ci_low"], sign * stat["ci_high"])
        if opts.require_significant and (worst is None or worst <= 0):
            reasons.append(f"the 95% CI of the delta [{stat['ci_low']}, {stat['ci_high']}] includes 0")
        if reasons:
            result.update(decision="rejected", reason="; ".join(reasons))
        elif opts.dry_run:
            result.update(decision="would_promote", reason="passed (dry run: alias not moved)")
        else:
            now = alias_target(read_state(admin), opts.alias)
            if now != current:
                result.update(decision="aborted", reason=f"alias {opts.alias} moved to {now} during the gate; "
                              f"run it again")
            else:
                resp = admin.put(f"/admin/aliases/{opts.alias}", json={"target": candidate})
                if resp.status_code != 200:
                    result.update(decision="failed", reason=f"PUT /admin/aliases/{opts.alias}: HTTP "
                                  f"{resp.status_code}: {_error(resp)}")
                else:
                    result.update(decision="promoted", reason="passed", alias_state=resp.json())
    result["finished_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    _write(out, result)
    result["out"] = str(out)
    return result


def _write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "gate.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# Gate: alias `{result['alias']}` → `{result['candidate']}`: **{result['decision']}**",
        "",
        f"- task {result['task']}, split {result['split']}; current `{result['current']}`",
        f"- {result.get('reason', '')}",
    ]
    if "delta" in result:
        pct = 100
        lines += [
            f"- {result['metric']}: current {_p(result['current_score'], pct)}, candidate "
            f"{_p(result['candidate_score'], pct)}, delta {_p(result['delta'], pct)} "
            f"[{_p(result['ci_low'], pct)}, {_p(result['ci_high'], pct)}] (paired bootstrap, N={result['n']}); "
            f"required ≥ {_p(result['min_delta'], pct)}",
        ]
    if result.get("command"):
        lines += ["", "```", result["command"], "```"]
    (out / "gate.md").write_text("\n".join(lines) + "\n", encoding="utf-8")


def _p(x: float | None, k: float) -> str:
    return "n/a" if x is None else f"{x * k:.1f}"
