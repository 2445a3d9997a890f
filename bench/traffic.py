"""The requests a comparison sends, through eval's load client (eval/client.py: httpx, one record
per request) with retries off: a refused request is a failure to count, not one to hide.

Latency is the client's, send to last byte; `server_latency_ms` is the gateway's
X-BioInstruct-Latency-Ms (the time it waited on its engine call), None from other servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from bioinstruct.eval.client import EvalClient, Record, RequestItem
from bioinstruct.eval.latency import percentile


def client(concurrency: int) -> EvalClient:
    """Requests go to absolute URLs (the comparisons talk to several servers)."""
    return EvalClient("", concurrency=concurrency, max_retries=0)


def request(url: str, body: dict[str, Any], n: int, tag: str | None = None) -> RequestItem:
    return RequestItem(id=f"{tag or 'r'}-{n}", path=url, body=body, meta={"tag": tag} if tag else {})


async def closed_loop(url: str, bodies: list[dict[str, Any]], concurrency: int,
                      on_done: Callable[[], None] | None = None) -> tuple[list[Record], float]:
    """Send every body, `concurrency` in flight at a time (each worker sends its next one as
    soon as its last answer arrives). Returns the records in order and the wall time."""
    items = [request(url, body, i) for i, body in enumerate(bodies)]
    on_record = (lambda _rec: on_done()) if on_done else None
    done = await client(concurrency).run(items, progress=False, on_record=on_record)
    records = [done[it.id] for it in items]
    duration = max(r.ended_at for r in records) - min(r.sent_at for r in records) if records else 0.0
    return records, duration


def warm(url: str, models: list[str], prompt: str, max_tokens: int = 4) -> None:
    """One request per model, one at a time (loads adapters into caches)."""
    bodies = [{"model": m, "prompt": prompt, "max_tokens": max_tokens, "min_tokens": max_tokens,
               "ignore_eos": True, "temperature": 0.0} for m in models]
    records, _ = asyncio.run(closed_loop(f"{url}/v1/completions", bodies, 1))
    failed = [f"{r.status} {r.error}" for r in records if not r.ok]
    if failed:
        raise RuntimeError(f"warm-up requests to {url} failed: {failed}")


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


def level_stats(records: list[Record], concurrency: int, duration: float) -> LevelStats:
    ok = [r for r in records if r.ok]
    lat = [r.latency_ms for r in ok]
    toks = sum(r.completion_tokens or 0 for r in ok)
    errors: dict[str, int] = {}
    for r in records:
        if not r.ok:
            key = f"{r.status} {(r.error or '')[:100]}"
            errors[key] = errors.get(key, 0) + 1
    return LevelStats(
        concurrency=concurrency, requests=len(records), completed=len(ok), failed=len(records) - len(ok),
        duration_s=duration, req_per_s=len(ok) / duration if duration else 0.0,
        out_tok_per_s=toks / duration if duration else 0.0, p50_ms=percentile(lat, 50),
        p90_ms=percentile(lat, 90), p99_ms=percentile(lat, 99),
        mean_out_tokens=toks / len(ok) if ok else 0.0, errors=errors,
    )
