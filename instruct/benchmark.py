"""Declarative benchmark tasks: one YAML file a benchmark, in the spirit of lm-evaluation-harness.

The one definition of each benchmark: `eval/` runs and scores it through the live API, and
`generation/` removes its items (every split of every task file) from training data. So it
lives here, in the shared layer both import, and a new task file is decontaminated against
as soon as it exists.

A task file says where the data is (a path under the data folder, a loader, an optional
selection), how each record is prepared (a short list of named, parameterised steps), which
route it goes to and how a record becomes the request body (templates), and how the answer
is scored (a scoring kind, the gold template, metrics by name: eval/metrics.py registers them and
checks a task file's names when eval loads it). A new benchmark whose data has the
shape of a shipped one needs only a new file: the loaders, steps and scoring kinds are
generic over field names.

Templates: a string that is exactly one ``{field}`` takes that field's value as is (a list
stays a list); any other string is filled with Python ``str.format`` against the record
(``{options[A]}`` indexes); lists and mappings are templated item by item; other values are
literals. Record fields of ``json_dict`` data get the key as ``_key``.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import string
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.parsing import match_option

PACKAGED_TASKS_DIR = Path(__file__).resolve().parent / "benchmarks"
LIMIT_SEED = 0
ROUTES = {"qa": "/qa", "extract": "/extract", "generate": "/generate"}


class TaskError(ValueError):
    """A task file or its data is not what it should be; the message says what and where."""


# --- templating ---------------------------------------------------------------------------

_FORMATTER = string.Formatter()
_WHOLE_FIELD = re.compile(r"^\{([^{}:!]+)\}$")


def _lookup(expr: str, record: dict[str, Any]) -> Any:
    try:
        value, _ = _FORMATTER.get_field(expr, (), record)
    except (KeyError, IndexError, AttributeError, TypeError) as exc:
        raise TaskError(f"template field {{{expr}}}: not in the record ({exc!r}); "
                        f"fields are {sorted(record)}") from None
    return value


def _mentions_a_field(template: Any) -> bool:
    """The template reads the record (a constant such as an instruction is not an item's text)."""
    if isinstance(template, str):
        return any(name is not None for _, name, _, _ in _FORMATTER.parse(template))
    if isinstance(template, list | tuple):
        return any(_mentions_a_field(t) for t in template)
    if isinstance(template, dict):
        return any(_mentions_a_field(t) for t in template.values())
    return False


def render(template: Any, record: dict[str, Any]) -> Any:
    """Fill a template (string, list, mapping or literal) from a record."""
    if isinstance(template, str):
        whole = _WHOLE_FIELD.match(template)
        if whole:
            return _lookup(whole.group(1), record)
        try:
            return _FORMATTER.vformat(template, (), record)
        except (KeyError, IndexError, AttributeError) as exc:
            raise TaskError(f"template {template!r}: field {exc} is not in the record; "
                            f"fields are {sorted(record)}") from None
    if isinstance(template, list):
        return [render(t, record) for t in template]
    if isinstance(template, dict):
        return {k: render(v, record) for k, v in template.items()}
    return template


# --- loaders ------------------------------------------------------------------------------

def _load_jsonl(path: Path) -> list[dict[str, Any]]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    out.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise TaskError(f"{path}:{n}: not JSON ({exc})") from None
    return out


def _load_json_dict(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise TaskError(f"{path}: loader json_dict expects a JSON object keyed by id")
    return [{"_key": key, **value} for key, value in data.items()]


def _load_json_list(path: Path) -> list[dict[str, Any]]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise TaskError(f"{path}: loader json_list expects a JSON array")
    return data


def bio_entities(tokens: Sequence[str], tags: Sequence[str]) -> list[dict[str, Any]]:
    """Entities of an IOB/IOB2 tag sequence: [{text, type, start_tok, end_tok (exclusive)}].

    An I- tag that does not continue an entity of its type starts a new one (conlleval's rule).
    """
    entities: list[dict[str, Any]] = []
    start, etype = None, None

    def close(end: int) -> None:
        if start is not None:
            entities.append({"text": " ".join(tokens[start:end]), "type": etype,
                             "start_tok": start, "end_tok": end})

    for i, tag in enumerate(tags):
        prefix, _, label = tag.partition("-")
        if tag == "O" or not label:
            close(i)
            start, etype = None, None
        elif prefix == "B" or label != etype or start is None:
            close(i)
            start, etype = i, label
    close(len(tags))
    return entities


def _load_conll(path: Path) -> list[dict[str, Any]]:
    """CoNLL-style `token<TAB>tag` lines, a blank line between sentences (IOB tags)."""
    records: list[dict[str, Any]] = []
    tokens: list[str] = []
    tags: list[str] = []

    def flush() -> None:
        if tokens:
            records.append({"id": f"{path.stem}-{len(records)}", "tokens": list(tokens), "tags": list(tags),
                            "entities": bio_entities(tokens, tags)})
            tokens.clear()
            tags.clear()

    with path.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip():
                flush()
                continue
            parts = line.split("\t")
            if len(parts) < 2:
                raise TaskError(f"{path}:{n}: expected 'token<TAB>tag'")
            tokens.append(parts[0])
            tags.append(parts[-1])
    flush()
    return records


LOADERS: dict[str, Callable[[Path], list[dict[str, Any]]]] = {
    "jsonl": _load_jsonl,
    "json_dict": _load_json_dict,
    "json_list": _load_json_list,
    "conll": _load_conll,
}


# --- processing steps ---------------------------------------------------------------------
# Each step takes a record (dict) and its parameters and returns the record with new fields.

def step_options_from_dict(record: dict, *, field: str, into: str = "choices",
                           keys_into: str = "choice_keys", dedupe: bool = True) -> dict:
    """{"A": text, ...} -> a list of texts (and the list of keys). With dedupe, a repeated text
    gets " (KEY)" appended, since /qa needs distinct options (MedMCQA has 14 such items)."""
    mapping = record.get(field)
    if not isinstance(mapping, dict) or not mapping:
        raise TaskError(f"options_from_dict: field {field!r} is not a non-empty mapping")
    keys = [str(k) for k in mapping]
    texts = [str(v).strip() for v in mapping.values()]
    if dedupe:
        seen: set[str] = set()
        for i, (key, text) in enumerate(zip(keys, texts, strict=True)):
            if text.casefold() in seen or not text:
                texts[i] = f"{text} ({key})".strip()
            seen.add(texts[i].casefold())
    return {**record, into: texts, keys_into: keys}


def step_strip_markers(record: dict, *, field: str, markers: dict[str, Sequence[str]], into: str) -> dict:
    """Entity markers in a sentence (ChemProt's '<< chemical >>', '[[ protein ]]'): the marked
    text of each goes into a field named like the marker, the sentence without the markers
    into `into`. Each marker must occur exactly once."""
    text = record.get(field)
    if not isinstance(text, str):
        raise TaskError(f"strip_markers: field {field!r} is not a string")
    out = dict(record)
    for name, pair in markers.items():
        if len(pair) != 2:
            raise TaskError(f"strip_markers: marker {name!r} needs [open, close]")
        pattern = re.compile(re.escape(pair[0]) + r"(.+?)" + re.escape(pair[1]))
        match = pattern.search(text)
        if match is None:
            raise TaskError(f"strip_markers: no {pair[0]}...{pair[1]} in {text[:120]!r}")
        out[name] = match.group(1).strip()
        text = text[:match.start()] + match.group(1) + text[match.end():]
    out[into] = text
    return out


def step_token_spans(record: dict, *, tokens: str = "tokens", entities: str = "entities", sep: str = " ",
                     text_into: str = "text", spans_into: str = "gold_spans",
                     types: dict[str, str] | None = None) -> dict:
    """Tokens joined with `sep` into a text, and token-indexed entities ({type, start_tok,
    end_tok exclusive}) into character spans [start, end, type] of that text; `types` renames a
    corpus's type to the one requests use (BC2GM's GENE is Gene)."""
    toks = record.get(tokens)
    if not isinstance(toks, list):
        raise TaskError(f"token_spans: field {tokens!r} is not a list of tokens")
    starts, pos = [], 0
    for tok in toks:
        starts.append(pos)
        pos += len(tok) + len(sep)
    text = sep.join(toks)
    spans = []
    for ent in record.get(entities) or []:
        s, e = int(ent["start_tok"]), int(ent["end_tok"])
        if not 0 <= s < e <= len(toks):
            raise TaskError(f"token_spans: entity {ent} is outside the {len(toks)} tokens")
        start, end = starts[s], starts[e - 1] + len(toks[e - 1])
        spans.append([start, end, (types or {}).get(ent["type"], ent["type"])])
    return {**record, text_into: text, spans_into: spans}


def step_join(record: dict, *, field: str, into: str, sep: str = "\n") -> dict:
    value = record.get(field)
    if isinstance(value, str):
        return {**record, into: value}
    return {**record, into: sep.join(str(v) for v in value or [])}


def step_template(record: dict, *, into: str, template: Any) -> dict:
    return {**record, into: render(template, record)}


STEPS: dict[str, Callable[..., dict]] = {
    "options_from_dict": step_options_from_dict,
    "strip_markers": step_strip_markers,
    "token_spans": step_token_spans,
    "join": step_join,
    "template": step_template,
}


# --- the task file schema -----------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Select(_Strict):
    """Which records of a file make the split: a slice (Python semantics) and/or a range of a field."""

    slice: tuple[int | None, int | None] | None = None
    field: str | None = None
    min: float | None = None
    max: float | None = Field(None, description="exclusive")

    def apply(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        if self.field is not None:
            kept = []
            for r in records:
                value = float(r[self.field])
                if (self.min is None or value >= self.min) and (self.max is None or value < self.max):
                    kept.append(r)
            records = kept
        if self.slice is not None:
            records = records[slice(*self.slice)]
        return records


class SplitSpec(_Strict):
    path: str = Field(description="Relative to the data folder (BIOINSTRUCT_DATA_DIR)")
    loader: Literal["jsonl", "json_dict", "json_list", "conll"] = "jsonl"
    id_field: str | None = Field(None, description="Field holding a stable id; default '<split>-<row>'")
    select: Select | None = None
    count: int | None = Field(None, description="Expected number of items (checked when loaded)")
    note: str | None = None


class StepSpec(BaseModel):
    model_config = ConfigDict(extra="allow")
    step: str

    @property
    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


class ScoringSpec(_Strict):
    kind: Literal["choice", "spans", "text"]
    target: Any = Field(description="Template of the gold: a label (choice), a list of [start, end, type] "
                        "(spans), a reference text (text)")
    labels: Any = Field(None, description="choice: the label of each option, by index (a list or a "
                        "template); default: the request's options")
    prediction: str | None = Field(None, description="Response field with the prediction; default "
                                   "answer_index (choice), entities (spans), text (text)")
    entity_types: list[str] | None = Field(None, description="spans: types scored; default the request's")
    metrics: list[str] = Field(description="Names of metrics registered in eval/metrics.py for this kind "
                               "(checked there when eval loads the task: instruct/ does not import eval/)")
    primary: str | None = None
    judge_prompt: str | None = Field(None, description="text: the LLM-judge prompt, with {source}, "
                                     "{reference}, {prediction}")
    judge_source: Any = Field(None, description="text: template of what the judge sees as the input")


class TaskSpec(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,62}$")
    family: TaskFamily
    description: str = ""
    splits: dict[str, SplitSpec]
    default_split: str = "test"
    dev_split: str | None = Field(None, description="The split `eval gate` uses by default")
    process: list[StepSpec] = Field(default_factory=list)
    route: Literal["qa", "extract", "generate"]
    request: dict[str, Any]
    scoring: ScoringSpec
    contamination: dict[str, Any] | None = Field(
        None, description="Templates of the texts of an item that training data must not contain "
        "(decontamination); default: the request's texts except its options")
    source: str | None = Field(None, description="The file it was loaded from (set by the loader)")

    @field_validator("family", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.upper() if isinstance(v, str) else v

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.default_split not in self.splits:
            raise ValueError(f"default_split {self.default_split!r} is not one of splits {sorted(self.splits)}")
        if self.dev_split is not None and self.dev_split not in self.splits:
            raise ValueError(f"dev_split {self.dev_split!r} is not one of splits {sorted(self.splits)}")
        for st in self.process:
            if st.step not in STEPS:
                raise ValueError(f"unknown process step {st.step!r}; known: {sorted(STEPS)}")
        if "adapter" in self.request:
            raise ValueError("request must not set 'adapter': it comes from --adapter")
        expected = {"choice": "qa", "spans": "extract", "text": "generate"}[self.scoring.kind]
        if self.route != expected:
            raise ValueError(f"scoring kind {self.scoring.kind!r} reads a /{expected} response, "
                             f"but route is {self.route!r}")
        if not self.scoring.metrics:
            raise ValueError("give at least one metric")
        primary = self.primary_metric
        if primary not in self.scoring.metrics:
            raise ValueError(f"primary metric {primary!r} is not in metrics {self.scoring.metrics}")
        return self

    # --- the pieces a run needs ---------------------------------------------------------

    @property
    def path(self) -> str:
        return ROUTES[self.route]

    @property
    def primary_metric(self) -> str:
        return self.scoring.primary or self.scoring.metrics[0]

    @property
    def streams(self) -> bool:
        return bool(self.request.get("stream"))

    def split_spec(self, split: str | None) -> SplitSpec:
        split = split or self.default_split
        if split not in self.splits:
            raise TaskError(f"task {self.name} has no split {split!r}; it has {sorted(self.splits)}")
        return self.splits[split]

    def fingerprint(self) -> str:
        """Hash of the task definition: runs compared or resumed must share it."""
        data = self.model_dump(mode="json", exclude={"source", "description", "contamination"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def load(self, split: str | None = None, data_dir: Path | None = None, limit: int | None = None) -> list[Doc]:
        """The split's items, processed, in file order; with `limit`, a fixed random sample of that size."""
        split = split or self.default_split
        spec = self.split_spec(split)
        root = Path(data_dir) if data_dir is not None else _default_data_dir()
        path = root / spec.path
        if not path.is_file():
            raise TaskError(f"task {self.name}: data file {path} not found; run `bioinstruct data fetch` "
                            f"(it lays out every dataset, checksummed), or point BIOINSTRUCT_DATA_DIR "
                            f"(or --data-dir) at a data folder laid out as docs/DATA.md says")
        records = LOADERS[spec.loader](path)
        if spec.select is not None:
            records = spec.select.apply(records)
        if spec.count is not None and len(records) != spec.count:
            raise TaskError(f"task {self.name} split {split}: {len(records)} items in {path}, "
                            f"expected {spec.count} (a different copy of the data?)")
        rows = list(range(len(records)))
        if limit is not None and limit < len(rows):
            # A fixed random sample, not the first N: some files are sorted by label (PubMedQA's
            # test set lists all 'yes' items first). A larger limit takes a superset, so a run
            # resumed with a larger --limit only sends the new items.
            order = rows[:]
            random.Random(LIMIT_SEED).shuffle(order)
            rows = sorted(order[:limit])
        docs, seen = [], set()
        for row in rows:
            record = records[row]
            doc_id = str(record[spec.id_field]) if spec.id_field else f"{split}-{row}"
            if doc_id in seen:
                raise TaskError(f"task {self.name}: duplicate id {doc_id!r} (field {spec.id_field})")
            seen.add(doc_id)
            for st in self.process:
                try:
                    record = STEPS[st.step](record, **st.params)
                except TypeError as exc:
                    raise TaskError(f"task {self.name}: step {st.step}: {exc}") from None
                except TaskError as exc:
                    raise TaskError(f"task {self.name}, item {doc_id}: {exc}") from None
            docs.append(Doc(doc_id, record))
        return docs

    def evaluation_texts(self, doc: Doc) -> list[tuple[str, str]]:
        """(field, text) of one item that training data must not contain: what the model is
        shown (`contamination`; default: the request's templates that read the item, but its
        options) and, for text tasks, the reference."""
        templates = self.contamination if self.contamination is not None else {
            key: value for key, value in self.request.items() if key != "options" and _mentions_a_field(value)}
        shown = render(templates, doc.fields)
        out: list[tuple[str, str]] = []
        for name, value in shown.items():
            if isinstance(value, str):
                out.append((name, value))
            elif isinstance(value, list):
                out.extend((f"{name}[{i}]", v) for i, v in enumerate(value) if isinstance(v, str))
        if self.scoring.kind == "text":
            out.append(("reference", self.gold(doc)))
        return [(name, text) for name, text in out if text.strip()]

    def body(self, doc: Doc, adapter: str | None) -> dict[str, Any]:
        try:
            body = render(self.request, doc.fields)
        except TaskError as exc:
            raise TaskError(f"task {self.name}, item {doc.id}: {exc}") from None
        if adapter is not None:
            body["adapter"] = adapter
        return body

    def gold(self, doc: Doc) -> Any:
        target = render(self.scoring.target, doc.fields)
        if self.scoring.kind == "spans":
            return sorted({(int(s), int(e), str(t)) for s, e, t in target})
        if self.scoring.kind == "choice":
            return str(target)
        return "" if target is None else str(target)

    def labels(self, doc: Doc) -> list[str]:
        """choice: the label of each option index."""
        if self.scoring.labels is not None:
            labels = render(self.scoring.labels, doc.fields)
        else:
            labels = render(self.request.get("options"), doc.fields)
        if not isinstance(labels, list) or not labels:
            raise TaskError(f"task {self.name}, item {doc.id}: no labels (set scoring.labels or request.options)")
        return [str(x) for x in labels]

    def entity_types(self, doc: Doc | None = None) -> list[str]:
        if self.scoring.entity_types:
            return list(self.scoring.entity_types)
        types = self.request.get("entity_types")
        return [str(t) for t in types] if isinstance(types, list) else ["Chemical", "Disease"]

    def prediction(self, doc: Doc, response: dict[str, Any] | None) -> Any:
        """What the response predicts, in the gold's shape; None when there is no usable answer."""
        if response is None:
            return None
        kind = self.scoring.kind
        if kind == "choice":
            labels = self.labels(doc)
            index = response.get(self.scoring.prediction or "answer_index")
            if isinstance(index, int) and 0 <= index < len(labels):
                return labels[index]
            answer = response.get("answer")
            if isinstance(answer, str):  # a free answer: map it to an option if one fits
                options = render(self.request.get("options"), doc.fields) or labels
                match = match_option(answer, options)
                if match.index is not None and match.index < len(labels):
                    return labels[match.index]
            return None
        if kind == "spans":
            allowed = set(self.entity_types(doc))
            out = set()
            for ent in response.get(self.scoring.prediction or "entities") or []:
                if ent.get("type") in allowed:
                    out.add((int(ent["start"]), int(ent["end"]), str(ent["type"])))
            return sorted(out)
        text = response.get(self.scoring.prediction or "text")
        return text if isinstance(text, str) else None

    def all_labels(self, docs: Iterable[Doc]) -> list[str]:
        """choice: every label in the task, in first-seen order (for macro-F1)."""
        seen: dict[str, None] = {}
        for doc in docs:
            for lab in self.labels(doc):
                seen.setdefault(lab, None)
            seen.setdefault(self.gold(doc), None)
        return list(seen)


@dataclass
class Doc:
    id: str
    fields: dict[str, Any] = field(repr=False)


# --- finding task files -------------------------------------------------------------------

def _default_data_dir() -> Path:
    from bioinstruct.settings import CoreSettings

    data_dir = CoreSettings().data_dir
    assert data_dir is not None
    return data_dir


def task_dirs(extra: Sequence[Path] | None = None) -> list[Path]:
    dirs = [Path(p) for p in (extra or [])]
    from bioinstruct.settings import CoreSettings

    env_dir = CoreSettings().eval_tasks_dir
    if env_dir is not None:
        dirs.append(env_dir)
    return [*dirs, PACKAGED_TASKS_DIR]


def task_files(extra: Sequence[Path] | None = None) -> dict[str, Path]:
    """name -> file; a file in an earlier folder hides a packaged task of the same name."""
    found: dict[str, Path] = {}
    for folder in task_dirs(extra):
        if folder.is_dir():
            for path in sorted(folder.glob("*.yaml")) + sorted(folder.glob("*.yml")):
                found.setdefault(path.stem, path)
    return found


_SHARED_REF = re.compile(r"^([A-Z][A-Z0-9_]*)(?:\[(\d+)\])?$")


def _shared_constant(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    """`!shared NAME` or `!shared NAME[i]`: a prompt string or label list of instruct/prompts.py,
    the constants training data is written with, so a task file names them instead of
    copying them (as lm-evaluation-harness task configs name Python with `!function`)."""
    from bioinstruct.instruct import prompts as shared

    ref = str(loader.construct_scalar(node))  # type: ignore[arg-type]
    match = _SHARED_REF.match(ref)
    value = getattr(shared, match.group(1), None) if match else None
    if match and match.group(2) is not None and isinstance(value, list | tuple):
        value = value[int(match.group(2))] if int(match.group(2)) < len(value) else None
    if isinstance(value, str):
        return value
    if isinstance(value, list | tuple) and value and all(isinstance(v, str) for v in value):
        return list(value)
    raise yaml.constructor.ConstructorError(
        None, None, f"!shared {ref}: not a string or list of strings in instruct/prompts.py "
        f"(write NAME or NAME[index], e.g. CHEMPROT_LABELS)", node.start_mark)


class _TaskLoader(yaml.SafeLoader):
    pass


_TaskLoader.add_constructor("!shared", _shared_constant)


def load_task_file(path: Path) -> TaskSpec:
    try:
        data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_TaskLoader)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as exc:
        raise TaskError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise TaskError(f"{path}: a task file is a YAML mapping")
    try:
        return TaskSpec.model_validate({**data, "source": str(path)})
    except ValueError as exc:
        raise TaskError(f"{path}: {exc}") from None


def load_task(name_or_path: str | Path, extra_dirs: Sequence[Path] | None = None) -> TaskSpec:
    """A task by name (packaged or in a tasks folder) or by the path of its YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") and candidate.is_file():
        return load_task_file(candidate)
    files = task_files(extra_dirs)
    if str(name_or_path) not in files:
        raise TaskError(f"no task {str(name_or_path)!r}; known tasks: {', '.join(sorted(files))}")
    return load_task_file(files[str(name_or_path)])


def all_tasks(extra_dirs: Sequence[Path] | None = None) -> list[TaskSpec]:
    return [load_task_file(p) for _, p in sorted(task_files(extra_dirs).items())]
