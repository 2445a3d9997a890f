"""The README's "Try it" requests against a running gateway, printed as sent and answered.

    python scripts/try_it.py [--base-url http://127.0.0.1:8000] [--markdown]

Five clinical sentences written for this check (not from any dataset) go to /extract; a few
questions to /qa (each also to the base model); two consumer questions to /generate. With
--markdown it prints the README's "Try it" table as it is there (tests/test_docs_examples.py
runs it against a live gateway with the shipped adapters and compares).
"""

from __future__ import annotations

import json

import httpx
import typer

from bioinstruct.instruct.prompts import CHEMPROT_LABELS, pair_relation_question

SENTENCES = [
    "The patient developed hepatotoxicity after high-dose acetaminophen.",
    "Cisplatin-induced nephrotoxicity and ototoxicity limited further cycles.",
    "Warfarin was stopped because of gastrointestinal bleeding.",
    "She was started on metformin for type 2 diabetes and later developed lactic acidosis.",
    "Haloperidol caused tardive dyskinesia in two elderly patients with dementia.",
]
QUESTIONS = [
    {"question": "Which organ produces insulin?", "options": ["Liver", "Pancreas", "Kidney", "Spleen"]},
    {"question": "A lack of which vitamin causes scurvy?",
     "options": ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"]},
    # chemical-protein relations, asked as the ChemProt task is (instruct/prompts.py)
    *({"question": pair_relation_question(chem, prot), "context": text, "options": list(CHEMPROT_LABELS)}
      for chem, prot, text in (
          ("Imatinib", "BCR-ABL",
           "Imatinib inhibits the BCR-ABL tyrosine kinase in chronic myeloid leukemia cells."),
          ("Tamoxifen", "estrogen receptor",
           "Tamoxifen acts as an antagonist of the estrogen receptor in breast tissue."),
          ("Rifampicin", "CYP3A4", "Rifampicin increases the expression of CYP3A4 in human hepatocytes."),
      )),
]
CONSUMER = [
    "Hi, my mother is 78 and takes warfarin for her heart. She fell last week and has a big bruise on "
    "her hip. "
    "Is it dangerous and should she stop the warfarin? Thank you.",
    "I have had a dry cough for three weeks since I started lisinopril for blood pressure. "
    "Could the pill cause it?",
]


SUMMARIZE = "Summarize the consumer health question into one short question."


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _entities(entities: list[dict]) -> str:
    """'Disease: a, b; Chemical: c': types in order of first mention."""
    by_type: dict[str, list[str]] = {}
    for e in entities:
        by_type.setdefault(e["type"], []).append(e["text"])
    return "; ".join(f"{t}: {', '.join(texts)}" for t, texts in by_type.items()) or "(none)"


def run(base_url: str) -> list[dict]:
    """Every request, as the rows the README shows: route, what was sent, what came back."""
    rows = []
    with httpx.Client(base_url=base_url, timeout=300) as client:
        for text in SENTENCES:
            r = client.post("/extract", json={"text": text})
            r.raise_for_status()
            r = r.json()
            rows.append({"route": "/extract", "text": text, "sent": text, "adapter": r["adapter"],
                         "entities": [(e["type"], e["text"]) for e in r["entities"]],
                         "answer": f"{_entities(r['entities'])} (`{r['adapter']}`)"})
        for body in QUESTIONS:
            r = client.post("/qa", json=body)
            b = client.post("/qa", json={**body, "adapter": "base"})
            r.raise_for_status()
            b.raise_for_status()
            r, b = r.json(), b.json()
            if body.get("context"):
                labels = f"the {len(body['options'])} ChemProt labels"
                sent = f"{body['context']} — {body['question']} ({labels})"
                route = "/qa (relation)"
            else:
                sent = f"{body['question']} ({', '.join(body['options'])})"
                route = "/qa"
            rows.append({"route": route, "question": body["question"], "context": body.get("context"),
                         "adapter": r["adapter"], "answer_text": r["answer"], "base_answer": b["answer"],
                         "sent": sent, "answer": f"{r['answer']} (`{r['adapter']}`; base: {b['answer']})"})
        for q in CONSUMER:
            r = client.post("/generate", json={"instruction": SUMMARIZE, "input": q, "max_tokens": 48})
            r.raise_for_status()
            r = r.json()
            rows.append({"route": "/generate (summarize)", "input": q, "sent": q, "adapter": r["adapter"],
                         "text": r["text"],
                         "answer": f"\"{r['text'].strip()}\" (`{r['adapter']}`)"})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| route | sent | answer (adapter) |", "|---|---|---|"]
    for row in rows:
        lines.append(f"| `{row['route']}` | {_cell(row['sent'])} | {_cell(row['answer'])} |")
    return "\n".join(lines)


def main(base_url: str = typer.Option("http://127.0.0.1:8000"),
         as_markdown: bool = typer.Option(False, "--markdown",
                                          help="Print the README's table instead of JSON lines")) -> None:
    rows = run(base_url)
    if as_markdown:
        print(markdown(rows))
        return
    for row in rows:
        print(json.dumps({k: v for k, v in row.items() if k not in ("answer", "sent")}, ensure_ascii=False))


if __name__ == "__main__":
    typer.run(main)
