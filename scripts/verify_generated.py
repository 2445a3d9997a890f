"""Check a `bioinstruct generate` output file and print the facts as JSON.

    python scripts/verify_generated.py data/generated/selfinstruct.jsonl

Every line a valid record (generation.store.read_records raises on anything else), distinct
ids and instructions, the largest ROUGE-L F between any two instructions (must be <= 0.7), and
the fast deduper keeping every record. Exit code 1 if any of these fails.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import numpy as np

from bioinstruct.generation.dedup import DEFAULT_THRESHOLD, dedup_fast, rouge_l_matrix
from bioinstruct.generation.store import read_records


def main(path: Path) -> int:
    records = list(read_records(path))
    instructions = [r.instruction for r in records]
    scores = rouge_l_matrix(instructions, instructions)
    np.fill_diagonal(scores, 0)
    facts = {
        "file": str(path),
        "records": len(records),
        "lines": len(path.read_text(encoding="utf-8").splitlines()),
        "distinct_ids": len({r.id for r in records}),
        "distinct_instructions": len(set(instructions)),
        "max_pairwise_rouge_l": round(float(scores.max()) if len(records) > 1 else 0.0, 4),
        "dedup_fast_keeps_all": all(dedup_fast(instructions)),
        "categories": dict(collections.Counter(r.category for r in records).most_common()),
    }
    print(json.dumps(facts, indent=1))
    ok = (facts["records"] == facts["lines"] == facts["distinct_ids"] == facts["distinct_instructions"]
          and facts["max_pairwise_rouge_l"] <= DEFAULT_THRESHOLD and facts["dedup_fast_keeps_all"])
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    sys.exit(main(Path(sys.argv[1])))
