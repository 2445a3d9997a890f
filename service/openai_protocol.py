"""Request models of the OpenAI-compatible routes (/v1/completions, /v1/chat/completions)
and the /v1/models listing.

These models are the one source for both what the gateway accepts and the schema it
publishes: `request_body()` turns a model into the route's OpenAPI request body, so a
limit is written once. The bodies go to vLLM nearly as sent, so fields we do not name pass
through unchanged (`extra="allow"`); the ones named here are those that would let one
caller hurt others (sequences per request, log-probabilities, token counts) or that the
gateway reads itself (`model`, `stream`, the prompt's family).

The token limit (BIOINSTRUCT_MAX_TOKENS_LIMIT) is a setting: it is checked when the request
is served and written into the published schema at start-up (routes/openai_compat.py).
"""

from __future__ import annotations

from typing import Annotated, Any, ClassVar

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WrapValidator,
    field_validator,
)
from pydantic.json_schema import GenerateJsonSchema
from pydantic_core import PydanticCustomError, core_schema

MAX_N = 8  # sequences one request may run on its one admission place (prompts x n)
MAX_LOGPROBS = 20
MAX_STOP = 4  # vLLM refuses more stop strings


def _integral(value: Any) -> Any:
    """5.0 is an integer to JSON Schema (and to the schema we publish): accept it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


def _range_message(low: int | None, high: int | None):
    """Say which bound to respect instead of pydantic's 'Input should be less than or equal to'."""
    def check(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError as exc:
            kind = exc.errors()[0]["type"]
            if kind in ("greater_than_equal", "less_than_equal"):
                bound = f"at least {low}" if kind == "greater_than_equal" else f"at most {high}"
                raise PydanticCustomError("out_of_range", "must be {bound} (got {got})",
                                          {"bound": bound, "got": value}) from None
            raise
    return WrapValidator(check)


def _int(low: int | None = None, high: int | None = None) -> Any:
    """An integer within [low, high]: the bounds are the schema's and the check's."""
    return Annotated[int, Field(ge=low, le=high), BeforeValidator(_integral), _range_message(low, high)]


SequenceCount = _int(1, MAX_N)
TokenCount = _int(1)
MinTokens = _int(0)
LogprobCount = _int(0, MAX_LOGPROBS)
Seed = _int(-(2**63), 2**63 - 1)
Text = Annotated[str, StringConstraints(min_length=1)]
# Token ids stay strict integers: a Python check per id would cost a millisecond per 1,000 ids.
TokenIds = Annotated[list[Annotated[int, Field(ge=0)]], Field(min_length=1)]


def _one_message(kind: str):
    """A union's failure as one error on the field, not one per member of the union."""
    def check(value: Any, handler: core_schema.ValidatorFunctionWrapHandler) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("invalid_" + kind, f"give {_KINDS[kind]}") from None
    return WrapValidator(check)


_KINDS = {
    "prompt": "a non-empty string, a list of token ids (integers >= 0), or a non-empty list of either",
    "stop": f"a string or a list of at most {MAX_STOP} strings",
    "content": "a string, a list of content parts, or null",
}


class NullableAsTypeList(GenerateJsonSchema):
    """`int | None` as {"type": ["integer", "null"], "maximum": ...}, not an anyOf: the bounds stay
    where clients (and our own schema test) look for them."""

    def nullable_schema(self, schema: core_schema.NullableSchema) -> dict[str, Any]:
        inner = self.generate_inner(schema["schema"])
        if isinstance(inner.get("type"), str):
            return {**inner, "type": [inner["type"], "null"]}
        return super().nullable_schema(schema)


class _OpenAIRequest(BaseModel):
    """What both /v1 request bodies share. Declared before the prompt or messages, so that their
    validators can read `n` and `max_tokens` (pydantic validates fields in declaration order)."""

    # No coercion ("5" -> 5, 0 -> false): a body that does not match the schema is refused.
    model_config = ConfigDict(extra="allow", strict=True)
    default_max_tokens: ClassVar[int | None] = None

    model: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = Field(
        description="An alias (`qa`), a pinned version (`bioinstruct-qa@3`) or the base model's name; "
        "GET /v1/models lists them")
    n: SequenceCount = 1
    max_tokens: TokenCount | None = Field(
        None, description="At most BIOINSTRUCT_MAX_TOKENS_LIMIT; default 16 for completions, "
        "the limit for chat")
    # The gateway checks it on both routes (vLLM's completions ignore it).
    max_completion_tokens: TokenCount | None = Field(None, description="At most BIOINSTRUCT_MAX_TOKENS_LIMIT")
    min_tokens: MinTokens | None = Field(None, description="At most max_tokens")
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    seed: Seed | None = None
    stream: bool | None = None
    stop: Annotated[str | Annotated[list[str], Field(max_length=MAX_STOP)],
                    _one_message("stop")] | None = None
    ignore_eos: bool = False

    @field_validator("min_tokens")
    @classmethod
    def _at_most_max_tokens(cls, value: int | None, info: ValidationInfo) -> int | None:
        data = info.data
        ceiling = data.get("max_tokens") or data.get("max_completion_tokens") or cls.default_max_tokens
        if value is not None and ceiling is not None and value > ceiling:
            raise PydanticCustomError("min_tokens_too_large",
                                      "must be an integer from 0 to max_tokens ({ceiling})",
                                      {"ceiling": ceiling})
        return value


def _sequence_rules() -> list[dict[str, Any]]:
    """prompts x n <= MAX_N in JSON Schema: a list of k prompts (strings or token-id lists, not a
    list of token ids, which is one prompt) allows n up to MAX_N // k, one rule per step down.
    The same rule as CompletionRequest._sequences, for clients and fuzzers that read the schema."""
    rules, cap = [], MAX_N
    for k in range(2, MAX_N + 1):
        if MAX_N // k < cap:
            cap = MAX_N // k
            prompts = {"type": "array", "minItems": k, "items": {"type": ["string", "array"]}}
            rules.append({"if": {"properties": {"prompt": prompts}, "required": ["prompt"]},
                          "then": {"properties": {"n": {"maximum": cap}}}})
    return rules


class CompletionRequest(_OpenAIRequest):
    model_config = ConfigDict(json_schema_extra={"allOf": _sequence_rules()})
    default_max_tokens: ClassVar[int | None] = 16  # OpenAI's, not "the rest of the context"

    prompt: Annotated[Text | TokenIds | Annotated[list[Text | TokenIds], Field(min_length=1,
                                                                               max_length=MAX_N)],
                      _one_message("prompt")] = Field(
        description=f"A string, token ids, or a list of either: prompts x n at most {MAX_N}")
    echo: bool | None = None
    logprobs: LogprobCount | None = None

    @field_validator("prompt", mode="wrap")
    @classmethod
    def _sequences(cls, value: Any, handler: core_schema.ValidatorFunctionWrapHandler,
                   info: ValidationInfo) -> Any:
        # Counted before the prompt's own checks: a list of 1,024 prompts is refused for what it
        # asks (sequences), not for its length. One request takes one admission place: bound
        # the sequences it may run on it, as the task routes do.
        n = info.data.get("n", 1)
        prompts = prompt_count(value)
        if prompts * n > MAX_N:
            raise PydanticCustomError(
                "too_many_sequences",
                "this request asks for {prompts} prompt(s) x n={n} = {total} sequences; "
                "the limit is {limit} per request: send several requests",
                {"prompts": prompts, "n": n, "total": prompts * n, "limit": MAX_N})
        return handler(value)

    def text(self) -> str:
        """The prompt's text when it is one string (what the family classifier reads)."""
        return self.prompt if isinstance(self.prompt, str) else ""


def prompt_count(prompt: Any) -> int:
    """How many prompts a completions `prompt` holds: a string or a token-id list is one; a list
    of strings or of token-id lists is one each."""
    if isinstance(prompt, list) and prompt and all(isinstance(p, str | list) for p in prompt):
        return len(prompt)
    return 1


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)

    role: Text
    # Optional and nullable: an assistant turn that called tools has no content.
    content: Annotated[str | list[Any], _one_message("content")] | None = None


class ChatCompletionRequest(_OpenAIRequest):
    messages: list[ChatMessage] = Field(min_length=1)
    logprobs: bool | None = None
    top_logprobs: LogprobCount | None = None

    def text(self) -> str:
        """The last user turn's text (what the family classifier reads)."""
        users = [m.content for m in self.messages if m.role == "user"]
        return users[-1] if users and isinstance(users[-1], str) else ""


TOKEN_FIELDS = ("max_tokens", "max_completion_tokens")


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """The model as a route's OpenAPI request body (`openapi_extra`), inline: the route reads
    its body itself (any content type, as before), so FastAPI does not add one."""
    schema = model.model_json_schema(schema_generator=NullableAsTypeList)
    definitions = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(definitions[ref.rsplit("/", 1)[1]])
            return {k: inline(v) for k, v in node.items()}
        return [inline(v) for v in node] if isinstance(node, list) else node

    return {"requestBody": {"required": True, "content": {"application/json": {"schema": inline(schema)}}}}


# --- /v1/models ---------------------------------------------------------------------------

class ModelCard(BaseModel):
    id: str
    object: str = "model"
    created: int
    owned_by: str = "bioinstruct"
    root: str | None = None
    parent: str | None = None
    target: str | None = None
    category: str | None = None


class ModelList(BaseModel):
    object: str = "list"
    data: list[ModelCard]
