"""Request and response models of the gateway's own routes (OpenAI-compatible ones pass through)."""

from __future__ import annotations

from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
    model_validator,
)

from bioinstruct.instruct.prompts import CHEMPROT_LABELS, DEFAULT_ENTITY_TYPES, TypeStrategy
from bioinstruct.registry import NAME_PATTERN, REF_PATTERN, VERSION_PATTERN, Category
from bioinstruct.service.errors import ErrorDetail

MAX_TEXT = 100_000
MAX_OPTIONS = 32

AdapterSpec = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=80,
        pattern=rf"^(base|auto|{NAME_PATTERN}(@{VERSION_PATTERN})?)$",
    ),
    Field(
        description="An alias (qa), a pinned version (bioinstruct-qa@3), 'base', or 'auto' (the adapter "
        "of the request's task family). Lower-case letters, digits, '.', '_', '-'.",
        examples=["auto", "qa", "bioinstruct-qa@1", "base"],
    ),
]
# What _not_blank and _no_control_chars accept, said in the schema (the validators keep the
# clearer messages): some non-space character, no control characters but newline, CR and tab.
TEXT_PATTERN = r"^[^\x00-\x08\x0b\x0c\x0e-\x1f]*[^\s\x00-\x1f][^\x00-\x08\x0b\x0c\x0e-\x1f]*$"
NonBlank = Annotated[str, StringConstraints(min_length=1, max_length=MAX_TEXT),
                     Field(json_schema_extra={"pattern": TEXT_PATTERN})]
Label = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=40,
                                         pattern=r"^[A-Za-z][A-Za-z0-9 _/-]*$")]


def _not_blank(value: str | None, field: str) -> str | None:
    if value is not None and not value.strip():
        raise ValueError(f"{field} must not be empty or only whitespace")
    return value


def _no_control_chars(value: str) -> str:
    bad = [c for c in value if ord(c) < 32 and c not in "\n\r\t"]
    if bad:
        raise ValueError("contains control characters (other than newline and tab); remove them")
    return value


def _integral(value: Any) -> Any:
    """5.0 is an integer to JSON Schema (and to the OpenAPI schema we publish): accept it."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# A token count (>= 1): an integer, or a float with no fraction (still not "5" or true).
Count = Annotated[int, Field(ge=1), BeforeValidator(_integral)]


class Strict(BaseModel):
    # No coercion ("5" -> 5, 0 -> False): a request that does not match the schema is refused.
    model_config = ConfigDict(extra="forbid", strict=True)


class Usage(BaseModel):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0

    def add(self, other: dict[str, Any] | None) -> Usage:
        if other:
            self.prompt_tokens += int(other.get("prompt_tokens") or 0)
            self.completion_tokens += int(other.get("completion_tokens") or 0)
            self.total_tokens = self.prompt_tokens + self.completion_tokens
        return self


class Served(BaseModel):
    """Which adapter version answered, and what it cost."""

    adapter: str = Field(description="The alias or pinned version that served, or 'base'")
    version: int | None = Field(None, description="The adapter version that served (None for base)")
    model: str = Field(description="The engine model: 'base' or '<name>@<version>'")
    usage: Usage
    latency_ms: float


# --- /qa ----------------------------------------------------------------------------------

class QAInput(Strict):
    """A /qa body without the adapter: what /compare sends to each adapter."""

    question: NonBlank
    context: str | list[Annotated[str, StringConstraints(max_length=MAX_TEXT)]] | None = Field(
        None, description="A passage or a list of passages (e.g. abstract sections)")
    options: list[Annotated[str, StringConstraints(strip_whitespace=True, min_length=1,
                                                   max_length=1000)]] | None = Field(
        None, description=f"2 to {MAX_OPTIONS} distinct options; the answer is always one of them",
        # In the schema; enforced by the validator below with a message that says what to change.
        json_schema_extra={"minItems": 2, "maxItems": MAX_OPTIONS, "uniqueItems": True})
    method: Literal["logprob", "constrained", "generate"] | None = Field(
        None, description="How an option is chosen: 'logprob' scores each option's likelihood (default), "
        "'constrained' decodes under a choice grammar, 'generate' maps free text to the nearest option")
    max_tokens: Count | None = Field(None, description="For free answers (no options)")
    temperature: float = Field(0.0, ge=0.0, le=2.0)

    @field_validator("question")
    @classmethod
    def _q(cls, v: str) -> str:
        return _no_control_chars(_not_blank(v, "question"))  # type: ignore[arg-type]

    @field_validator("options")
    @classmethod
    def _opts(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return v
        if len(v) < 2:
            raise ValueError("give at least 2 options, or leave options out for a free answer")
        if len(v) > MAX_OPTIONS:
            raise ValueError(f"at most {MAX_OPTIONS} options are allowed, got {len(v)}")
        if len(set(v)) != len(v):  # exact, as the schema's uniqueItems says ("Yes" and "yes" differ)
            raise ValueError("options must be distinct")
        return v

    @property
    def context_chars(self) -> int:
        if self.context is None:
            return 0
        return len(self.context) if isinstance(self.context, str) else sum(map(len, self.context))


class QARequest(QAInput):
    adapter: AdapterSpec | None = None


class QAResponse(Served):
    answer: str
    answer_index: int | None = Field(None, description="Index of the answer in options")
    method: str = Field(description="How the answer was chosen: logprob, constrained, generate:<match>, or free")
    scores: dict[str, float] | None = Field(None, description="logprob method: log-likelihood of each option")
    raw_text: str


# --- /extract -----------------------------------------------------------------------------

class ExtractInput(Strict):
    text: NonBlank
    entity_types: list[Label] = Field(default_factory=lambda: list(DEFAULT_ENTITY_TYPES), min_length=1, max_length=16)
    relations: bool = False
    relation_types: list[Label] = Field(default_factory=lambda: list(CHEMPROT_LABELS), min_length=1, max_length=32)
    max_tokens: Count | None = None
    type_strategy: TypeStrategy | None = Field(
        None, description="How the adapter is asked for the types (instruct.prompts.entity_asks): 'full' "
        "asks every type it knows and drops a span it calls an unrequested type, "
        "'grouped' asks only the requested types, 'asked' one prompt as written. Default: the gateway's "
        "BIOINSTRUCT_EXTRACT_TYPE_STRATEGY.")

    @field_validator("text")
    @classmethod
    def _t(cls, v: str) -> str:
        return _no_control_chars(_not_blank(v, "text"))  # type: ignore[arg-type]


class ExtractRequest(ExtractInput):
    adapter: AdapterSpec | None = None


class EntityOut(BaseModel):
    text: str
    type: str
    start: int
    end: int


class RelationOut(BaseModel):
    head: EntityOut
    type: str
    tail: EntityOut


class ExtractResponse(Served):
    entities: list[EntityOut]
    relations: list[RelationOut] | None = None
    dropped: int = Field(description="Model mentions not found in the text (or of another type), dropped")
    raw_text: str


# --- /generate ----------------------------------------------------------------------------

class GenerateInput(Strict):
    instruction: NonBlank
    input: str | None = Field(None, max_length=MAX_TEXT)
    max_tokens: Count | None = None
    temperature: float = Field(0.0, ge=0.0, le=2.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    # vLLM refuses more than 4 stop strings: the schema says what the engine accepts.
    stop: list[Annotated[str, StringConstraints(min_length=1, max_length=100)]] | None = Field(None, max_length=4)

    @field_validator("instruction")
    @classmethod
    def _i(cls, v: str) -> str:
        return _no_control_chars(_not_blank(v, "instruction"))  # type: ignore[arg-type]


class GenerateRequest(GenerateInput):
    adapter: AdapterSpec | None = None
    stream: bool = False


class GenerateResponse(Served):
    text: str
    finish_reason: str | None
    family: str = Field(description="Task family used to pick the adapter (QA, IE, GEN)")


# --- /compare -----------------------------------------------------------------------------

def _compare_body(value: Any) -> Any:
    """Say what to change for the two keys a route's body has and /compare's does not."""
    if isinstance(value, dict):
        if "adapter" in value:
            raise ValueError("put adapters in 'adapters', not in 'request.adapter'")
        if "stream" in value:
            raise ValueError("streaming is not available in /compare; leave 'stream' out")
    return value


class _Compare(Strict):
    # The route's request model, given an adapter: one per adapter in `bodies()`.
    _target: ClassVar[type[Strict]]
    adapters: list[AdapterSpec] = Field(min_length=1, max_length=8, json_schema_extra={"uniqueItems": True})

    @field_validator("adapters")
    @classmethod
    def _distinct(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("adapters must be distinct")
        return v

    def bodies(self) -> list[Any]:
        given = self.request.model_dump(exclude_unset=True)  # type: ignore[attr-defined]
        return [self._target(**given, adapter=a) for a in self.adapters]


class CompareQA(_Compare):
    _target = QARequest
    route: Literal["qa"]
    request: Annotated[QAInput, BeforeValidator(_compare_body)] = Field(description="A /qa body, without 'adapter'")


class CompareExtract(_Compare):
    _target = ExtractRequest
    route: Literal["extract"]
    request: Annotated[ExtractInput, BeforeValidator(_compare_body)] = Field(
        description="An /extract body, without 'adapter'")


class CompareGenerate(_Compare):
    _target = GenerateRequest
    route: Literal["generate"]
    request: Annotated[GenerateInput, BeforeValidator(_compare_body)] = Field(
        description="A /generate body, without 'adapter' and 'stream'")


# The schema says which body each route takes (oneOf on `route`), so a client or a fuzzer
# knows that {"route": "qa", "request": {"instruction": ...}} is wrong before sending it.
CompareRequest = Annotated[CompareQA | CompareExtract | CompareGenerate, Field(discriminator="route")]


class CompareResult(BaseModel):
    adapter: str
    status: int
    response: dict[str, Any] | None = None
    error: ErrorDetail | None = None


class CompareResponse(BaseModel):
    route: str
    results: list[CompareResult]
    latency_ms: float


# --- admin --------------------------------------------------------------------------------

class PublishRequest(Strict):
    path: str = Field(description="A folder holding a peft LoRA (safetensors), relative to the publish root "
                      "(BIOINSTRUCT_PUBLISH_ROOT); no absolute paths, no '..'",
                      # In the schema; the admin route checks it with messages that say what to change.
                      json_schema_extra={"pattern": r"^(?![/~])(?!(.*/)?\.\.(/|$)).+$"})
    name: Annotated[str, StringConstraints(pattern=rf"^{NAME_PATTERN}$")]
    category: Category
    description: str | None = Field(None, max_length=2000)
    alias: Annotated[str, StringConstraints(pattern=rf"^{NAME_PATTERN}$")] | None = None


class AliasRequest(Strict):
    """One target, or a weighted split between versions (a canary): give `target` or `weights`."""

    target: Annotated[str, StringConstraints(pattern=rf"^{REF_PATTERN}$")] | None = Field(
        None, description="<name>@<version>: all traffic to this version")
    weights: dict[Annotated[str, StringConstraints(pattern=rf"^{REF_PATTERN}$")],
                  Annotated[int, Field(ge=0, le=1000)]] | None = Field(
        None, min_length=1, max_length=16,
        description="{<name>@<version>: weight}: traffic split by weight; weight 0 drains a version")
    expected_generation: Annotated[int, Field(ge=0)] | None = Field(
        None, description="Compare-and-swap: refuse (409) unless the alias is at this generation (0: new)")

    @model_validator(mode="after")
    def _one_route(self) -> AliasRequest:
        if (self.target is None) == (self.weights is None):
            raise ValueError("give exactly one of 'target' (one version) or 'weights' (a split)")
        if self.weights is not None and sum(self.weights.values()) <= 0:
            raise ValueError("'weights': give at least one version a positive weight")
        return self

    @property
    def route(self) -> str | dict[str, int]:
        return self.target if self.target is not None else dict(self.weights or {})


class PromoteRequest(Strict):
    target: Annotated[str, StringConstraints(pattern=rf"^{REF_PATTERN}$")] | None = Field(
        None, description="The version to send all traffic to (default: the newest in the split)")
    expected_generation: Annotated[int, Field(ge=0)] | None = None


class AliasOut(BaseModel):
    alias: str
    target: str
    weights: dict[str, int] = Field(default_factory=dict)
    generation: int = 0
    serving: str | None
    serving_split: dict[str, int] = Field(default_factory=dict)
    history: list[str]
    error: str | None = None


class AdapterVersionOut(BaseModel):
    ref: str
    loaded: bool
    aliases: list[str]
    manifest: dict[str, Any]


class AdaptersOut(BaseModel):
    versions: list[AdapterVersionOut]
    aliases: list[AliasOut]
    swaps: list[dict[str, Any]]
