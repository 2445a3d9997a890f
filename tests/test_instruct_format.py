"""The prompt format is one function, used byte-identically by training and serving."""

from __future__ import annotations

import pytest

from bioinstruct.instruct import TaskFamily, build_messages, render_example, render_prompt


def test_messages_carry_instruction_and_input():
    msgs = build_messages(TaskFamily.QA, "Is aspirin an NSAID?", "Context: aspirin ...")
    assert [m["role"] for m in msgs] == ["system", "user"]
    assert msgs[1]["content"] == "Is aspirin an NSAID?\n\nInput:\nContext: aspirin ..."
    assert build_messages("GEN", "Summarize.", None)[1]["content"] == "Summarize."
    assert build_messages("GEN", "Summarize.", "   ")[1]["content"] == "Summarize."


def test_unknown_family_is_refused():
    with pytest.raises(ValueError):
        build_messages("POETRY", "x")


def test_prompt_uses_models_chat_template(tokenizer):
    text = render_prompt(tokenizer, TaskFamily.QA, "What organ makes insulin?")
    assert text.startswith("<|im_start|>system\nYou are a biomedical assistant.")
    assert text.endswith("<|im_start|>assistant\n")
    assert "<|im_start|>user\nWhat organ makes insulin?<|im_end|>" in text


def test_training_and_serving_render_identical_bytes(tokenizer):
    record = {
        "category": "IE",
        "instruction": "List the chemicals in the text.",
        "input": "Patients received cisplatin and developed nephrotoxicity.",
        "output": "Chemical: cisplatin",
    }
    served = render_prompt(tokenizer, record["category"], record["instruction"], record["input"])
    prompt, completion = render_example(
        tokenizer, record["category"], record["instruction"], record["input"], record["output"]
    )
    assert prompt.encode("utf-8") == served.encode("utf-8")
    assert completion == "Chemical: cisplatin<|im_end|>\n"
    # Token ids agree too when both sides tokenize without adding special tokens.
    ids_prompt = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids_served = tokenizer(served, add_special_tokens=False)["input_ids"]
    assert ids_prompt == ids_served


@pytest.mark.engine
def test_engine_renders_the_same_prompt(engine, tokenizer):
    """vLLM's own chat rendering of our messages equals our prompt text."""
    import httpx

    msgs = build_messages(TaskFamily.GEN, "Explain what an ACE inhibitor does.", None)
    r = httpx.post(
        f"{engine.base_url}/tokenize",
        json={"model": "base", "messages": msgs, "add_generation_prompt": True},
        timeout=30,
    )
    r.raise_for_status()
    ours = tokenizer(render_prompt(tokenizer, "GEN", "Explain what an ACE inhibitor does."),
                     add_special_tokens=False)["input_ids"]
    assert r.json()["tokens"] == ours
