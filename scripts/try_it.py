"""The README's "Try it" requests against a running gateway, printed as sent and answered.

    python scripts/try_it.py [--base-url http://127.0.0.1:8000]

Five clinical sentences written for this check (not from any dataset) go to /extract; a few
questions to /qa; two consumer questions to /generate. The output is what the README quotes.
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
    {"question": "A lack of which vitamin causes scurvy?", "options": ["Vitamin A", "Vitamin C", "Vitamin D", "Vitamin K"]},
    # chemical-protein relations, asked as the ChemProt task is (instruct/prompts.py)
    *({"question": pair_relation_question(chem, prot), "context": text, "options": list(CHEMPROT_LABELS)} for chem, prot, text in (
        ("Imatinib", "BCR-ABL", "Imatinib inhibits the BCR-ABL tyrosine kinase in chronic myeloid leukemia cells."),
        ("Tamoxifen", "estrogen receptor", "Tamoxifen acts as an antagonist of the estrogen receptor in breast tissue."),
        ("Rifampicin", "CYP3A4", "Rifampicin increases the expression of CYP3A4 in human hepatocytes."),
    )),
]
CONSUMER = [
    "Hi, my mother is 78 and takes warfarin for her heart. She fell last week and has a big bruise on her hip. "
    "Is it dangerous and should she stop the warfarin? Thank you.",
    "I have had a dry cough for three weeks since I started lisinopril for blood pressure. Could the pill cause it?",
]


def main(base_url: str = typer.Option("http://127.0.0.1:8000")) -> None:
    with httpx.Client(base_url=base_url, timeout=300) as client:
        for text in SENTENCES:
            r = client.post("/extract", json={"text": text}).json()
            print(json.dumps({"text": text, "adapter": r.get("adapter"),
                              "entities": [(e["type"], e["text"]) for e in r.get("entities", [])]}))
        for body in QUESTIONS:
            r = client.post("/qa", json=body).json()
            b = client.post("/qa", json={**body, "adapter": "base"}).json()
            print(json.dumps({"question": body["question"], "context": body.get("context"), "adapter": r.get("adapter"),
                              "answer": r.get("answer"), "base_answer": b.get("answer")}))
        for q in CONSUMER:
            r = client.post("/generate", json={"instruction": "Summarize the consumer health question into one short question.",
                                               "input": q, "max_tokens": 48}).json()
            print(json.dumps({"input": q, "adapter": r.get("adapter"), "text": r.get("text")}))


if __name__ == "__main__":
    typer.run(main)
