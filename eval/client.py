"""Async HTTP client for the live API: bounded concurrency or Poisson arrivals, retries on
429/503 only (honouring Retry-After), one record per request appended to a JSONL file so
that an interrupted run resumes where it stopped.

Resume rule: an id whose last record is a success, or a 4xx other than 429 (the same body
would fail the same way), is not sent again; anything else (connection errors, 5xx,
429/503 after the retries ran out) is sent again. The last record of an id wins.

The wire-level pieces (Retry-After, backoff, error bodies, server-sent events) are the public
client's (`bioinstruct.client`), so the harness reads the gateway exactly as users' code does.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from pydantic import BaseModel

from bioinstruct.client import (  # noqa: F401 - retry_after_seconds is part of this module's API
    RETRY_STATUSES,
    SERVER_LATENCY_HEADER,
    aiter_sse_events,
    backoff_seconds,
    error_message,
    event_text,
    json_or_none,
    retry_after_seconds,
    stream_error,
)


@dataclass
class RequestItem:
    id: str
    path: str  # "/qa", "/chat/completions", ...
    body: dict[str, Any]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def stream(self) -> bool:
        return bool(self.body.get("stream"))


class Record(BaseModel):
    """What happened to one request (its final attempt, plus how many attempts it took)."""

    id: str
    path: str
    adapter: str | None = None  # what the request asked for
    status: int  # HTTP status of the final attempt; 0 when no response came (connection error)
    ok: bool
    error: str | None = None
    attempts: int = 1
    retry_wait_s: float = 0.0
    started_at: float  # unix time the first attempt was sent
    sent_at: float  # unix time the final attempt was sent
    latency_ms: float  # final attempt, send to last byte
    total_ms: float  # first send to last byte, retries included
    ttft_ms: float | None = None  # streaming: send to first text chunk
    itl_ms: list[float] | None = None  # streaming: gaps between text chunks
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    served_model: str | None = None
    served_version: int | None = None
    server_latency_ms: float | None = None
    response: dict[str, Any] | None = None
    meta: dict[str, Any] = {}

    @property
    def ended_at(self) -> float:
        """Unix time the final attempt's answer was in."""
        return self.sent_at + self.latency_ms / 1000

    @property
    def final(self) -> bool:
        """Not worth sending again on resume."""
        return self.ok or (400 <= self.status < 500 and self.status not in RETRY_STATUSES)


def read_records(path: Path) -> dict[str, Record]:
    """Last record of each id in a records file (a torn last line is skipped)."""
    out: dict[str, Record] = {}
    if not path.is_file():
        return out
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.strip()
            if not line:
                continue
            try:
                rec = Record.model_validate_json(line)
            except ValueError:
                continue
            out[rec.id] = rec
    return out


class EvalClient:
    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        concurrency: int = 8,
        rate: float | None = None,
        max_retries: int = 6,
        backoff_base_s: float = 0.5,
        backoff_max_s: float = 30.0,
        max_retry_wait_s: float = 120.0,
        timeout_s: float = 900.0,
        seed: int = 0,
        keep_itl: bool = False,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        if rate is not None and rate <= 0:
            raise ValueError("rate must be positive (requests per second)")
        self.base_url = base_url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency = concurrency
        self.rate = rate
        self.max_retries = max_retries
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.max_retry_wait_s = max_retry_wait_s
        self.timeout_s = timeout_s
        self.seed = seed
        self.keep_itl = keep_itl
        self.transport = transport
        self.sleep = sleep
        self._rng = random.Random(seed)

    def connect(self) -> httpx.AsyncClient:
        """The connection pool `send` and `run` use (an async context manager)."""
        limits = httpx.Limits(max_connections=self.concurrency + 4, max_keepalive_connections=self.concurrency + 4)
        return httpx.AsyncClient(base_url=self.base_url, headers=self.headers, limits=limits,
                                 timeout=httpx.Timeout(self.timeout_s, connect=30.0), transport=self.transport)

    def _backoff(self, attempt: int, retry_after: float | None) -> float:
        return backoff_seconds(attempt, retry_after, base_s=self.backoff_base_s, max_s=self.backoff_max_s,
                               max_wait_s=self.max_retry_wait_s, rng=self._rng)

    # --- one request ---------------------------------------------------------------------

    async def _attempt(self, client: httpx.AsyncClient, item: RequestItem) -> dict[str, Any]:
        """One HTTP exchange. Returns status, body, latency, headers, and stream timings."""
        sent = time.perf_counter()
        out: dict[str, Any] = {"sent_at": time.time(), "ttft_ms": None, "itl_ms": None}
        try:
            if item.stream:
                async with client.stream("POST", item.path, json=item.body) as resp:
                    out["status"] = resp.status_code
                    out["retry_after"] = resp.headers.get("retry-after")
                    if resp.status_code != 200 or "text/event-stream" not in resp.headers.get("content-type", ""):
                        raw = await resp.aread()
                        out["text"] = raw.decode("utf-8", "replace")
                        out["body"] = json_or_none(out["text"])
                    else:
                        out.update(await self._read_sse(resp, sent))
            else:
                resp = await client.post(item.path, json=item.body)
                out["latency_ms"] = (time.perf_counter() - sent) * 1000  # last byte in, before decoding
                out["status"] = resp.status_code
                out["retry_after"] = resp.headers.get("retry-after")
                out["server_ms"] = resp.headers.get(SERVER_LATENCY_HEADER)
                out["text"] = resp.text
                out["body"] = json_or_none(resp.text)
        except httpx.HTTPError as exc:
            out.update(status=0, body=None, text="", error=f"{type(exc).__name__}: {exc}")
        out.setdefault("latency_ms", (time.perf_counter() - sent) * 1000)
        return out

    async def _read_sse(self, resp: httpx.Response, sent: float) -> dict[str, Any]:
        """The gateway's /generate stream: data: {"text"}... data: {"done", usage...} data: [DONE]."""
        chunks: list[str] = []
        times: list[float] = []
        done: dict[str, Any] | None = None
        error: str | None = None
        async for event in aiter_sse_events(resp):
            err = stream_error(event)
            if err is not None:
                error = f"stream error: {err.get('message')}"
                break
            if event.get("done"):
                done = event
                continue
            # The gateway's events carry {"text"}; OpenAI-style ones put it in choices.
            text = event_text(event)
            if text:
                chunks.append(text)
                times.append(time.perf_counter())
            if event.get("choices") and event.get("usage"):
                done = {**(done or {}), "usage": event["usage"]}
        body: dict[str, Any] = {**(done or {}), "text": "".join(chunks)}
        body.pop("done", None)
        out: dict[str, Any] = {"body": body, "text": ""}
        if times:
            out["ttft_ms"] = (times[0] - sent) * 1000
            out["itl_ms"] = [round((b - a) * 1000, 3) for a, b in zip(times, times[1:], strict=False)]
        if error:
            out["error"] = error
        elif done is None:
            out["error"] = "stream ended without its final event"
        return out

    async def send(self, client: httpx.AsyncClient, item: RequestItem) -> Record:
        started = time.time()
        t0 = time.perf_counter()
        attempt, waited = 0, 0.0
        while True:
            attempt += 1
            res = await self._attempt(client, item)
            status = res["status"]
            if status in RETRY_STATUSES and attempt <= self.max_retries:
                wait = self._backoff(attempt, retry_after_seconds(res.get("retry_after")))
                waited += wait
                await self.sleep(wait)
                continue
            break
        body = res.get("body")
        error = res.get("error")
        ok = status == 200 and error is None and isinstance(body, dict)
        if status != 200 and error is None:
            error = f"HTTP {status}: {error_message(body, res.get('text', ''))}"
        usage = (body or {}).get("usage") if isinstance(body, dict) else None
        return Record(
            id=item.id, path=item.path, adapter=item.body.get("adapter"), status=status, ok=ok, error=error,
            attempts=attempt, retry_wait_s=round(waited, 3), started_at=started, sent_at=res["sent_at"],
            latency_ms=round(res["latency_ms"], 3), total_ms=round((time.perf_counter() - t0) * 1000, 3),
            ttft_ms=None if res.get("ttft_ms") is None else round(res["ttft_ms"], 3),
            itl_ms=res.get("itl_ms") if self.keep_itl else None,
            prompt_tokens=(usage or {}).get("prompt_tokens"), completion_tokens=(usage or {}).get("completion_tokens"),
            served_model=(body or {}).get("model") if ok else None,
            served_version=(body or {}).get("version") if ok else None,
            server_latency_ms=_server_latency(body, res.get("server_ms")) if ok else None,
            response=body if ok else None, meta=item.meta,
        )

    # --- a batch -------------------------------------------------------------------------

    def arrival_offsets(self, n: int) -> list[float]:
        """Seconds from the start at which each request is sent (Poisson process at `rate`)."""
        if self.rate is None:
            return [0.0] * n
        rng = np.random.default_rng(self.seed)
        return list(np.cumsum(rng.exponential(1.0 / self.rate, size=n)) - 0.0)

    async def run(
        self,
        items: Iterable[RequestItem],
        records_path: Path | None = None,
        *,
        progress: bool = True,
        description: str = "requests",
        on_record: Callable[[Record], None] | None = None,
    ) -> dict[str, Record]:
        """Send every item not already done in records_path; return the last record of each id.

        Without a rate, `concurrency` requests are in flight at all times (closed loop). With
        a rate, requests are sent at Poisson arrival times whatever the answers do (open
        loop), with at most `concurrency` in flight.
        """
        items = list(items)
        done = read_records(records_path) if records_path else {}
        todo = [it for it in items if not (it.id in done and done[it.id].final)]
        results: dict[str, Record] = {it.id: done[it.id] for it in items if it.id in done}
        fh = None
        if records_path is not None:
            records_path.parent.mkdir(parents=True, exist_ok=True)
            _end_with_newline(records_path)
            fh = records_path.open("a", encoding="utf-8")
        bar = _progress(len(todo), description, progress)
        sem = asyncio.Semaphore(self.concurrency)

        def record(rec: Record) -> None:
            results[rec.id] = rec
            if fh is not None:
                fh.write(rec.model_dump_json(exclude_none=True) + "\n")
                fh.flush()
            if bar is not None:
                bar.update(1)
                if not rec.ok:
                    bar.set_postfix_str(f"last error: {(rec.error or '')[:60]}")
            if on_record is not None:
                on_record(rec)

        try:
            async with self.connect() as client:
                if self.rate is None:
                    queue: asyncio.Queue[RequestItem] = asyncio.Queue()
                    for it in todo:
                        queue.put_nowait(it)

                    async def worker() -> None:
                        while True:
                            try:
                                it = queue.get_nowait()
                            except asyncio.QueueEmpty:
                                return
                            record(await self.send(client, it))

                    await asyncio.gather(*(worker() for _ in range(min(self.concurrency, len(todo)) or 0)))
                else:
                    offsets = self.arrival_offsets(len(todo))
                    start = time.perf_counter()

                    async def fire(it: RequestItem, at: float) -> None:
                        delay = at - (time.perf_counter() - start)
                        if delay > 0:
                            await asyncio.sleep(delay)
                        async with sem:
                            record(await self.send(client, it))

                    await asyncio.gather(*(fire(it, at) for it, at in zip(todo, offsets, strict=True)))
        finally:
            if fh is not None:
                fh.close()
            if bar is not None:
                bar.close()
        return results


def _server_latency(body: Any, header: str | None) -> float | None:
    if isinstance(body, dict) and isinstance(body.get("latency_ms"), int | float):
        return float(body["latency_ms"])
    try:
        return float(header) if header else None
    except ValueError:
        return None


def _end_with_newline(path: Path) -> None:
    """A run killed mid-write leaves a torn last line: end it so new records start clean."""
    if path.is_file() and path.stat().st_size:
        with path.open("rb+") as fh:
            fh.seek(-1, 2)
            if fh.read(1) != b"\n":
                fh.write(b"\n")


def _progress(total: int, description: str, enabled: bool):
    if not enabled or total == 0:
        return None
    with contextlib.suppress(ImportError):
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=description, unit="req", dynamic_ncols=True)
    return None
