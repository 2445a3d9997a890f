"""Typed Python client for the BioInstruct gateway's task routes (sync and async, streaming).

    from bioinstruct.client import BioInstructClient

    with BioInstructClient("http://127.0.0.1:8000") as client:
        answer = client.qa("Which organ produces insulin?", options=["Liver", "Pancreas"])
        print(answer.answer, answer.adapter)
        for chunk in client.generate("Explain what insulin does.", stream=True):
            print(chunk, end="")

`AsyncBioInstructClient` has the same methods, awaited (`async for` over a stream). Results are
pydantic models mirroring the gateway's responses; every failure (an error answer, a refused
connection, an error inside a stream) raises `BioInstructError` with `status`, `code`, `type`
and `message`. 429 and 503 are retried, honouring Retry-After (`max_retries`, default 2).

Needs only httpx and pydantic (no torch, no vLLM, nothing of the service). The wire-level pieces
below (Retry-After, error bodies, server-sent events) are the ones the evaluation harness's
load client (`bioinstruct.eval.client`) uses too.

Defaults come from the environment: BIOINSTRUCT_CLIENT_BASE_URL, BIOINSTRUCT_CLIENT_API_KEY,
BIOINSTRUCT_CLIENT_TIMEOUT_S, BIOINSTRUCT_CLIENT_MAX_RETRIES; arguments win.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import random
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, Literal, overload

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = [
    "AsyncBioInstructClient", "AsyncTextStream", "BioInstructClient", "BioInstructError", "ClientSettings",
    "CompareItem", "CompareResult", "Entity", "ExtractResult", "GenerateResult", "ModelCard", "QAResult",
    "Relation", "StreamEnd", "TextStream", "Usage",
]

# ---- wire-level pieces (shared with bioinstruct.eval.client) -------------------------------------

RETRY_STATUSES = frozenset({429, 503})
# The gateway's time waiting on its engine for /v1 routes (task routes put it in the body: latency_ms).
SERVER_LATENCY_HEADER = "X-BioInstruct-Latency-Ms"
DONE = object()  # what sse_event returns for `data: [DONE]`


def retry_after_seconds(value: str | None, now: float | None = None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when is None:
        return None
    return max(0.0, when.timestamp() - (now if now is not None else time.time()))


def backoff_seconds(attempt: int, retry_after: float | None, *, base_s: float = 0.5, max_s: float = 30.0,
                    max_wait_s: float = 120.0, rng: random.Random | None = None) -> float:
    """The wait before retry `attempt` (1-based): the server's Retry-After (capped at max_wait_s), else
    exponential from base_s up to max_s, jittered to between half and all of it."""
    if retry_after is not None:
        return min(retry_after, max_wait_s)
    wait = min(max_s, base_s * 2 ** (attempt - 1))
    return wait * (0.5 + (rng or random).random() / 2)


def json_or_none(text: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, TypeError):
        return None


def error_message(body: Any, text: str) -> str:
    """`type: message` of an OpenAI-shaped error body, else the start of the raw text."""
    if isinstance(body, dict) and isinstance(body.get("error"), dict):
        err = body["error"]
        return f"{err.get('type') or 'error'}: {err.get('message')}"
    return text[:500]


def sse_event(line: str) -> Any:
    """One line of a server-sent event stream: its JSON payload, DONE for `[DONE]`, None otherwise."""
    if not line.startswith("data:"):
        return None
    payload = line[5:].strip()
    if payload == "[DONE]":
        return DONE
    return json_or_none(payload)


def event_text(event: dict[str, Any]) -> str:
    """The text one stream event carries: the gateway's {"text"} or an OpenAI chunk's choices."""
    if isinstance(event.get("text"), str) and not event.get("done"):
        return event["text"]
    return "".join(c.get("text") or (c.get("delta") or {}).get("content") or ""
                   for c in event.get("choices") or [] if isinstance(c, dict))


def stream_error(event: dict[str, Any]) -> dict[str, Any] | None:
    """The error an event reports (a failure after the 200 status line), as {message, type, code}."""
    if "error" not in event:
        return None
    err = event["error"]
    return err if isinstance(err, dict) else {"message": str(err)}


def iter_sse_events(response: httpx.Response) -> Iterator[dict[str, Any]]:
    """The JSON events of a streamed response, up to `[DONE]`."""
    for line in response.iter_lines():
        event = sse_event(line)
        if event is DONE:
            return
        if isinstance(event, dict):
            yield event


async def aiter_sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    """The JSON events of a streamed response, up to `[DONE]`."""
    async for line in response.aiter_lines():
        event = sse_event(line)
        if event is DONE:
            return
        if isinstance(event, dict):
            yield event


class BioInstructError(Exception):
    """Any failure of a call: an error answer (status 4xx/5xx), no answer (status None, code
    "connection_error"), or an error after a stream had begun (status None, the event's code)."""

    def __init__(self, message: str, *, status: int | None = None, code: str | int | None = None,
                 type: str | None = None, param: str | None = None) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.type, self.param = message, status, code, type, param

    def __str__(self) -> str:
        where = f"HTTP {self.status}" if self.status is not None else "no HTTP status"
        code = f", {self.code}" if self.code is not None else ""
        return f"{where}{code}: {self.message}"

    @classmethod
    def from_response(cls, status: int, text: str) -> BioInstructError:
        body = json_or_none(text)
        if isinstance(body, dict) and isinstance(body.get("error"), dict):
            err = body["error"]
            return cls(str(err.get("message")), status=status, code=err.get("code"), type=err.get("type"),
                       param=err.get("param"))
        return cls(text[:500] or f"HTTP {status}", status=status)


# ---- typed results: mirrors of the gateway's response models --------------------------------------

class _Result(BaseModel):
    model_config = ConfigDict(extra="allow")  # a field the gateway adds later is kept, not an error


class Usage(_Result):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


class _Served(_Result):
    adapter: str = Field(description="The alias or pinned version that served, or 'base'")
    version: int | None = Field(None, description="The adapter version that served (None for base)")
    model: str = Field(description="The engine model: 'base' or '<name>@<version>'")
    usage: Usage
    latency_ms: float


class QAResult(_Served):
    answer: str
    answer_index: int | None = None
    method: str
    scores: dict[str, float] | None = None
    raw_text: str


class Entity(_Result):
    text: str
    type: str
    start: int
    end: int


class Relation(_Result):
    head: Entity
    type: str
    tail: Entity


class ExtractResult(_Served):
    entities: list[Entity]
    relations: list[Relation] | None = None
    dropped: int
    raw_text: str


class GenerateResult(_Served):
    text: str
    finish_reason: str | None = None
    family: str


class StreamEnd(_Served):
    """The last event of a /generate stream: what served it and what it cost."""

    finish_reason: str | None = None
    family: str


class CompareItem(_Result):
    adapter: str
    status: int
    response: QAResult | ExtractResult | GenerateResult | None = None
    error: dict[str, Any] | None = None


class CompareResult(_Result):
    route: str
    results: list[CompareItem]
    latency_ms: float


class ModelCard(_Result):
    id: str
    object: str = "model"
    created: int | None = None
    owned_by: str | None = None
    root: str | None = None
    parent: str | None = None
    target: str | None = Field(None, description="An alias: the version it serves")
    category: str | None = None


_ROUTE_RESULTS: dict[str, type[_Served]] = {
    "qa": QAResult, "extract": ExtractResult, "generate": GenerateResult}


class ClientSettings(BaseSettings):
    """The client's defaults, from the environment (prefix BIOINSTRUCT_CLIENT_)."""

    model_config = SettingsConfigDict(env_prefix="BIOINSTRUCT_CLIENT_", extra="ignore")

    base_url: str = "http://127.0.0.1:8000"
    api_key: SecretStr | None = None
    timeout_s: float = 300.0
    max_retries: int = Field(2, ge=0)


def _body(**fields: Any) -> dict[str, Any]:
    """A request body of the fields given (None: left out, so the gateway's default applies)."""
    return {key: value for key, value in fields.items() if value is not None}


def _compare_items(data: dict[str, Any]) -> dict[str, Any]:
    result_type = _ROUTE_RESULTS.get(str(data.get("route")))
    items = []
    for item in data.get("results") or []:
        item = dict(item)
        if result_type is not None and isinstance(item.get("response"), dict):
            item["response"] = result_type.model_validate(item["response"])
        items.append(item)
    return {**data, "results": items}


class _Common:
    def __init__(self, base_url: str | None, api_key: str | None, timeout_s: float | None,
                 max_retries: int | None) -> None:
        defaults = ClientSettings()
        self.base_url = (base_url or defaults.base_url).rstrip("/")
        key = api_key
        if key is None and defaults.api_key is not None:
            key = defaults.api_key.get_secret_value()
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.timeout_s = timeout_s if timeout_s is not None else defaults.timeout_s
        self.max_retries = max_retries if max_retries is not None else defaults.max_retries
        self._rng = random.Random()

    def _wait(self, attempt: int, response: httpx.Response) -> float | None:
        """Seconds to wait before retrying `response`, or None when it is final."""
        if response.status_code not in RETRY_STATUSES or attempt > self.max_retries:
            return None
        retry_after = retry_after_seconds(response.headers.get("retry-after"))
        return backoff_seconds(attempt, retry_after, rng=self._rng)

    @staticmethod
    def _qa_body(question: str, options: Sequence[str] | None, context: str | Sequence[str] | None,
                 adapter: str | None, method: str | None, max_tokens: int | None,
                 temperature: float | None) -> dict[str, Any]:
        return _body(question=question, options=list(options) if options is not None else None,
                     context=context if isinstance(context, str | None) else list(context), adapter=adapter,
                     method=method, max_tokens=max_tokens, temperature=temperature)

    @staticmethod
    def _extract_body(text: str, entity_types: Sequence[str] | None, relations: bool | None,
                      relation_types: Sequence[str] | None, adapter: str | None,
                      max_tokens: int | None, type_strategy: str | None = None) -> dict[str, Any]:
        return _body(text=text, entity_types=list(entity_types) if entity_types is not None else None,
                     relations=relations,
                     relation_types=list(relation_types) if relation_types is not None else None,
                     adapter=adapter, max_tokens=max_tokens, type_strategy=type_strategy)

    @staticmethod
    def _generate_body(instruction: str, input: str | None, adapter: str | None, max_tokens: int | None,
                       temperature: float | None, top_p: float | None, stop: Sequence[str] | None,
                       stream: bool) -> dict[str, Any]:
        return _body(instruction=instruction, input=input, adapter=adapter, max_tokens=max_tokens,
                     temperature=temperature, top_p=top_p, stop=list(stop) if stop is not None else None,
                     stream=True if stream else None)

    @staticmethod
    def _compare_body(route: str, adapters: Sequence[str], request: dict[str, Any]) -> dict[str, Any]:
        return {"route": route, "adapters": list(adapters), "request": _body(**request)}

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        if response.status_code != 200:
            raise BioInstructError.from_response(response.status_code, response.text)
        data = json_or_none(response.text)
        if data is None:
            raise BioInstructError("the gateway answered 200 with a body that is not JSON: "
                                   f"{response.text[:200]!r}", status=200, code="bad_response")
        return data


def _connection_error(exc: httpx.HTTPError, base_url: str) -> BioInstructError:
    return BioInstructError(f"no answer from {base_url}: {type(exc).__name__}: {exc}",
                            code="connection_error")


class _StreamState:
    """What both stream kinds share: the text so far, the final event, the error checks."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.end: StreamEnd | None = None

    def take(self, event: dict[str, Any]) -> str | None:
        err = stream_error(event)
        if err is not None:
            raise BioInstructError(str(err.get("message")), code=err.get("code"), type=err.get("type"))
        if event.get("done"):
            self.end = StreamEnd.model_validate({k: v for k, v in event.items() if k != "done"})
            return None
        text = event_text(event)
        if text:
            self.parts.append(text)
            return text
        return None

    def finish(self) -> None:
        if self.end is None:
            raise BioInstructError("the stream ended without its final event (the connection was cut)",
                                   code="incomplete_stream")

    @property
    def text(self) -> str:
        return "".join(self.parts)


class _Stream:
    """What both streams share: the response, its context (closed once), what was read so far."""

    def __init__(self, response: httpx.Response, context: Any) -> None:
        self._response, self._context, self._state = response, context, _StreamState()

    @property
    def text(self) -> str:
        return self._state.text

    @property
    def end(self) -> StreamEnd | None:
        return self._state.end

    @staticmethod
    def _broken(exc: httpx.HTTPError) -> BioInstructError:
        return BioInstructError(f"the stream broke: {type(exc).__name__}: {exc}", code="connection_error")


class TextStream(_Stream):
    """`generate(..., stream=True)`: iterate for the text chunks as they come. After the loop, `text`
    is the whole text and `end` says which adapter served and the usage. Use it in a `with`
    block, or read it to the end, so the connection is released."""

    def __iter__(self) -> Iterator[str]:
        try:
            for event in iter_sse_events(self._response):
                if (text := self._state.take(event)) is not None:
                    yield text
            self._state.finish()
        except httpx.HTTPError as exc:
            raise self._broken(exc) from exc
        finally:
            self.close()

    def close(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            context.__exit__(None, None, None)

    def __enter__(self) -> TextStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class AsyncTextStream(_Stream):
    """The async `generate(..., stream=True)`: `async for chunk in stream`; then `text` and `end`."""

    async def __aiter__(self) -> AsyncIterator[str]:
        try:
            async for event in aiter_sse_events(self._response):
                if (text := self._state.take(event)) is not None:
                    yield text
            self._state.finish()
        except httpx.HTTPError as exc:
            raise self._broken(exc) from exc
        finally:
            await self.aclose()

    async def aclose(self) -> None:
        if self._context is not None:
            context, self._context = self._context, None
            await context.__aexit__(None, None, None)

    async def __aenter__(self) -> AsyncTextStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


class BioInstructClient(_Common):
    """The gateway's task routes from synchronous code. `base_url` is the gateway (no /v1)."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 timeout_s: float | None = None, max_retries: int | None = None,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout_s, max_retries)
        self._http = httpx.Client(base_url=self.base_url, headers=self.headers, transport=transport,
                                  timeout=httpx.Timeout(self.timeout_s, connect=min(30.0, self.timeout_s)))

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> BioInstructClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = self._http.request(method, path, json=body)
            except httpx.HTTPError as exc:
                raise _connection_error(exc, self.base_url) from exc
            wait = self._wait(attempt, response)
            if wait is None:
                return response
            time.sleep(wait)

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._json(self._send("POST", path, body))

    def qa(self, question: str, *, options: Sequence[str] | None = None,
           context: str | Sequence[str] | None = None, adapter: str | None = None,
           method: Literal["logprob", "constrained", "generate"] | None = None,
           max_tokens: int | None = None, temperature: float | None = None) -> QAResult:
        """POST /qa: with `options`, the answer is always one of them (`answer_index`)."""
        body = self._qa_body(question, options, context, adapter, method, max_tokens, temperature)
        return QAResult.model_validate(self._post("/qa", body))

    def extract(self, text: str, *, entity_types: Sequence[str] | None = None, relations: bool | None = None,
                relation_types: Sequence[str] | None = None, adapter: str | None = None,
                max_tokens: int | None = None, type_strategy: str | None = None) -> ExtractResult:
        """POST /extract: entities whose offsets satisfy text[start:end] == entity.text."""
        body = self._extract_body(text, entity_types, relations, relation_types, adapter, max_tokens, type_strategy)
        return ExtractResult.model_validate(self._post("/extract", body))

    @overload
    def generate(self, instruction: str, input: str | None = None, *, adapter: str | None = None,
                 max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 stop: Sequence[str] | None = None, stream: Literal[False] = False) -> GenerateResult: ...

    @overload
    def generate(self, instruction: str, input: str | None = None, *, adapter: str | None = None,
                 max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 stop: Sequence[str] | None = None, stream: Literal[True]) -> TextStream: ...

    def generate(self, instruction: str, input: str | None = None, *, adapter: str | None = None,
                 max_tokens: int | None = None, temperature: float | None = None, top_p: float | None = None,
                 stop: Sequence[str] | None = None, stream: bool = False) -> GenerateResult | TextStream:
        """POST /generate; `stream=True` gives a TextStream of text chunks."""
        body = self._generate_body(instruction, input, adapter, max_tokens, temperature, top_p, stop, stream)
        if not stream:
            return GenerateResult.model_validate(self._post("/generate", body))
        attempt = 0
        while True:
            attempt += 1
            context = self._http.stream("POST", "/generate", json=body)
            try:
                response = context.__enter__()
            except httpx.HTTPError as exc:
                raise _connection_error(exc, self.base_url) from exc
            if response.status_code == 200:
                return TextStream(response, context)
            response.read()
            context.__exit__(None, None, None)
            wait = self._wait(attempt, response)
            if wait is None:
                raise BioInstructError.from_response(response.status_code, response.text)
            time.sleep(wait)

    def compare(self, route: Literal["qa", "extract", "generate"], adapters: Sequence[str],
                **request: Any) -> CompareResult:
        """POST /compare: one request body (the route's fields, as keyword arguments) sent to each adapter."""
        data = self._post("/compare", self._compare_body(route, adapters, request))
        return CompareResult.model_validate(_compare_items(data))

    def models(self) -> list[ModelCard]:
        """GET /v1/models: the base model, the aliases (with the version each serves), registry versions."""
        data = self._json(self._send("GET", "/v1/models"))
        return [ModelCard.model_validate(card) for card in data.get("data", [])]


class AsyncBioInstructClient(_Common):
    """The gateway's task routes from asyncio code; the methods of BioInstructClient, awaited."""

    def __init__(self, base_url: str | None = None, *, api_key: str | None = None,
                 timeout_s: float | None = None, max_retries: int | None = None,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        super().__init__(base_url, api_key, timeout_s, max_retries)
        timeout = httpx.Timeout(self.timeout_s, connect=min(30.0, self.timeout_s))
        self._http = httpx.AsyncClient(base_url=self.base_url, headers=self.headers, transport=transport,
                                       timeout=timeout)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncBioInstructClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def _send(self, method: str, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        attempt = 0
        while True:
            attempt += 1
            try:
                response = await self._http.request(method, path, json=body)
            except httpx.HTTPError as exc:
                raise _connection_error(exc, self.base_url) from exc
            wait = self._wait(attempt, response)
            if wait is None:
                return response
            await asyncio.sleep(wait)

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        return self._json(await self._send("POST", path, body))

    async def qa(self, question: str, *, options: Sequence[str] | None = None,
                 context: str | Sequence[str] | None = None, adapter: str | None = None,
                 method: Literal["logprob", "constrained", "generate"] | None = None,
                 max_tokens: int | None = None, temperature: float | None = None) -> QAResult:
        body = self._qa_body(question, options, context, adapter, method, max_tokens, temperature)
        return QAResult.model_validate(await self._post("/qa", body))

    async def extract(self, text: str, *, entity_types: Sequence[str] | None = None,
                      relations: bool | None = None, relation_types: Sequence[str] | None = None,
                      adapter: str | None = None, max_tokens: int | None = None,
                      type_strategy: str | None = None) -> ExtractResult:
        body = self._extract_body(text, entity_types, relations, relation_types, adapter, max_tokens, type_strategy)
        return ExtractResult.model_validate(await self._post("/extract", body))

    @overload
    async def generate(self, instruction: str, input: str | None = None, *, adapter: str | None = None,
                       max_tokens: int | None = None, temperature: float | None = None,
                       top_p: float | None = None, stop: Sequence[str] | None = None,
                       stream: Literal[False] = False) -> GenerateResult: ...

    @overload
    async def generate(self, instruction: str, input: str | None = None, *, adapter: str | None = None,
                       max_tokens: int | None = None, temperature: float | None = None,
                       top_p: float | None = None, stop: Sequence[str] | None = None,
                       stream: Literal[True]) -> AsyncTextStream: ...

    async def generate(self, instruction: str, input: str | None = None, *, adapter: str | None = None,
                       max_tokens: int | None = None, temperature: float | None = None,
                       top_p: float | None = None, stop: Sequence[str] | None = None,
                       stream: bool = False) -> GenerateResult | AsyncTextStream:
        body = self._generate_body(instruction, input, adapter, max_tokens, temperature, top_p, stop, stream)
        if not stream:
            return GenerateResult.model_validate(await self._post("/generate", body))
        attempt = 0
        while True:
            attempt += 1
            context = self._http.stream("POST", "/generate", json=body)
            try:
                response = await context.__aenter__()
            except httpx.HTTPError as exc:
                raise _connection_error(exc, self.base_url) from exc
            if response.status_code == 200:
                return AsyncTextStream(response, context)
            await response.aread()
            await context.__aexit__(None, None, None)
            wait = self._wait(attempt, response)
            if wait is None:
                raise BioInstructError.from_response(response.status_code, response.text)
            await asyncio.sleep(wait)

    async def compare(self, route: Literal["qa", "extract", "generate"], adapters: Sequence[str],
                      **request: Any) -> CompareResult:
        data = await self._post("/compare", self._compare_body(route, adapters, request))
        return CompareResult.model_validate(_compare_items(data))

    async def models(self) -> list[ModelCard]:
        data = self._json(await self._send("GET", "/v1/models"))
        return [ModelCard.model_validate(card) for card in data.get("data", [])]
