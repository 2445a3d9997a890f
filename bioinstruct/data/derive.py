"""Deterministic steps that make the data folder's derived files from upstream ones.

Each step writes bytes that must hash to the manifest's SHA-256: the reference copy
(../shared/data) was made this way, so the same inputs give the same file, byte for byte.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from xml.etree import ElementTree

from bioinstruct.data.manifest import Derivation


class DeriveError(RuntimeError):
    pass


def derive(step: Derivation, inputs: list[Path], out: Path) -> None:
    """Run `step` on `inputs` (the step's input files, in its order) and write `out`."""
    if step.how == "pubmedqa_split":
        assert step.part is not None
        out.write_bytes(pubmedqa_split(inputs[0], inputs[1], step.part))
    elif step.how == "conll_entities":
        assert step.split is not None
        out.write_bytes(conll_entities(inputs[0], step.split))
    else:
        out.write_bytes(xlsx_rows(inputs[0], step.fields, step.index_field))


# --- PubMedQA: PQA-L split into the official 500 test PMIDs and the other 500 -------------

def pubmedqa_split(ori_pqal: Path, ground_truth: Path, part: str) -> bytes:
    items = json.loads(ori_pqal.read_text(encoding="utf-8"))
    test_ids = json.loads(ground_truth.read_text(encoding="utf-8"))
    if part == "test":  # in the ground truth's order
        picked = {pmid: items[pmid] for pmid in test_ids}
    else:               # in ori_pqal's order
        picked = {pmid: item for pmid, item in items.items() if pmid not in test_ids}
    return json.dumps(picked, indent=1, ensure_ascii=False).encode("utf-8")


# --- CoNLL IOB (token<TAB>tag, blank line between sentences) -> one sentence a line ---------

def _sentences(path: Path) -> Iterator[tuple[list[str], list[str]]]:
    tokens: list[str] = []
    tags: list[str] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            line = line.rstrip("\n")
            if not line.strip():
                if tokens:
                    yield tokens, tags
                tokens, tags = [], []
                continue
            token, tag = line.split("\t")
            tokens.append(token)
            tags.append(tag)
    if tokens:
        yield tokens, tags


def _entities(tokens: list[str], tags: list[str]) -> list[dict]:
    out: list[dict] = []
    start: int | None = None
    kind = ""
    for i, tag in enumerate([*tags, "O"]):
        if start is not None and not (tag.startswith("I-") and tag[2:] == kind):
            out.append({"text": " ".join(tokens[start:i]), "type": kind, "start_tok": start, "end_tok": i})
            start = None
        if tag.startswith("B-") or (tag.startswith("I-") and start is None):
            start, kind = i, tag[2:]
    return out


def conll_entities(tsv: Path, split: str) -> bytes:
    lines = [
        json.dumps({"id": f"{split}-{n}", "tokens": tokens, "tags": tags,
                    "entities": _entities(tokens, tags)}, ensure_ascii=False)
        for n, (tokens, tags) in enumerate(_sentences(tsv))
    ]
    return "".join(line + "\n" for line in lines).encode("utf-8")


# --- A spreadsheet's first sheet -> one JSON object a row -----------------------------------
# Read with the standard library (an .xlsx is a zip of XML), so no spreadsheet package is needed.

_NS = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main"}
_REL = "{http://schemas.openxmlformats.org/officeDocument/2006/relationships}id"
_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")  # OOXML escapes control characters as _xHHHH_


def _text(node: ElementTree.Element) -> str:
    # A string is one <t> or rich-text runs <r><t>; phonetic hints (<rPh>) are not text.
    parts = [t.text or "" for t in node.iterfind("m:t", _NS)]
    parts += [t.text or "" for t in node.iterfind("m:r/m:t", _NS)]
    return _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), "".join(parts))


def _column(ref: str) -> int:
    letters = re.match(r"[A-Z]+", ref)
    if not letters:
        raise DeriveError(f"bad cell reference {ref!r}")
    n = 0
    for ch in letters.group(0):
        n = n * 26 + ord(ch) - 64
    return n - 1


def _first_sheet(zf: zipfile.ZipFile) -> str:
    workbook = ElementTree.fromstring(zf.read("xl/workbook.xml"))
    sheet = workbook.find("m:sheets/m:sheet", _NS)
    if sheet is None:
        raise DeriveError("the workbook has no sheet")
    rels = ElementTree.fromstring(zf.read("xl/_rels/workbook.xml.rels"))
    for rel in rels:
        if rel.get("Id") == sheet.get(_REL):
            target = rel.get("Target", "")
            return target.lstrip("/") if target.startswith("/") else f"xl/{target}"
    raise DeriveError("the workbook's first sheet has no file")


def read_xlsx(path: Path) -> list[list[str]]:
    """The first sheet's rows as lists of cell texts (numbers as written, "" for empty)."""
    try:
        with zipfile.ZipFile(path) as zf:
            shared: list[str] = []
            if "xl/sharedStrings.xml" in zf.namelist():
                strings = ElementTree.fromstring(zf.read("xl/sharedStrings.xml"))
                shared = [_text(si) for si in strings.iterfind("m:si", _NS)]
            sheet = ElementTree.fromstring(zf.read(_first_sheet(zf)))
    except (zipfile.BadZipFile, KeyError, ElementTree.ParseError) as exc:
        raise DeriveError(f"{path.name} is not a readable .xlsx: {exc}") from None
    rows: list[list[str]] = []
    for row in sheet.iterfind("m:sheetData/m:row", _NS):
        cells: dict[int, str] = {}
        for i, cell in enumerate(row.iterfind("m:c", _NS)):
            col = _column(cell.get("r")) if cell.get("r") else i
            kind = cell.get("t")
            value = cell.find("m:v", _NS)
            if kind == "s" and value is not None:
                cells[col] = shared[int(value.text or 0)]
            elif kind == "inlineStr":
                inline = cell.find("m:is", _NS)
                cells[col] = _text(inline) if inline is not None else ""
            else:
                cells[col] = value.text or "" if value is not None else ""
        rows.append([cells.get(c, "") for c in range(max(cells, default=-1) + 1)])
    return rows


def xlsx_rows(path: Path, fields: list[str], index_field: str | None = None) -> bytes:
    """Row 1 is the header; each later row becomes {index_field: n, fields[0]: column A, ...}."""
    rows = read_xlsx(path)
    if not rows or len(rows[0]) < len(fields):
        raise DeriveError(f"{path.name}: expected at least {len(fields)} columns ({', '.join(fields)})")
    lines = []
    for cells in rows[1:]:
        values = (cells + [""] * len(fields))[:len(fields)]
        if not any(values):
            continue  # blank rows below the table
        record: dict[str, object] = {index_field: len(lines)} if index_field else {}
        record.update(zip(fields, values, strict=True))
        lines.append(json.dumps(record, ensure_ascii=False) + "\n")
    return "".join(lines).encode("utf-8")
