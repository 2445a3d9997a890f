"""The fixed prompts every server in a comparison gets: real questions from the shared data,
rendered with the base model's chat template as plain text, and the request bodies built from them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from bioinstruct.settings import CoreSettings

PROMPTS_FILE = "mediqa_qs_2021/mediqa_qs_test.jsonl"


def _data_dir() -> Path:
    core = CoreSettings()
    return core.data_dir or core.home.parent / "shared" / "data"


def _chat(texts: list[str]) -> list[str]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(CoreSettings().base_model_dir)
    return [tok.apply_chat_template([{"role": "user", "content": t}], tokenize=False,
                                    add_generation_prompt=True) for t in texts]


def load_prompts(n: int = 64, max_chars: int = 300, chat: bool = True) -> list[str]:
    """n consumer health questions (MEDIQA-QS 2021 test), cut to max_chars, rendered with the
    base model's chat template as plain text (the same string goes to every server)."""
    questions = []
    with (_data_dir() / PROMPTS_FILE).open() as fh:
        for line in fh:
            q = " ".join(json.loads(line)["question"].split())
            questions.append(q[:max_chars])
            if len(questions) >= n:
                break
    return _chat(questions) if chat else questions


def load_long_prompts(n: int = 48) -> list[str]:
    """n PubMedQA-length prompts (test questions with their abstract contexts, as /qa sends them:
    a few hundred tokens each), rendered with the chat template."""
    from bioinstruct.generation.datasets import pubmedqa

    items = pubmedqa(_data_dir(), "test")[:n]
    return _chat(["Context:\n" + "\n".join(it["CONTEXTS"]) + f"\n\nQuestion: {it['QUESTION']}\n"
                  "Answer yes, no or maybe." for it in items])


def completion_bodies(prompts: list[str], models: list[str], n: int, max_tokens: int,
                      offset: int = 0) -> list[dict[str, Any]]:
    """n /v1/completions bodies: prompts and models taken in turn; output length fixed (min = max
    tokens, EOS ignored), greedy."""
    return [{"model": models[i % len(models)], "prompt": prompts[(offset + i) % len(prompts)],
             "max_tokens": max_tokens, "min_tokens": max_tokens, "ignore_eos": True, "temperature": 0.0}
            for i in range(n)]
