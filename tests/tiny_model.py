"""A randomly initialised LLaMA of a few thousand parameters with the real tokenizer: training
tests run the real loop on it in seconds (what they check is the loop, not what it learns)."""

from __future__ import annotations

from pathlib import Path


def make_tiny_llama(base_model_dir: Path, out: Path, *, hidden: int = 64, layers: int = 2, heads: int = 4) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(base_model_dir)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=max(heads // 2, 1),
                         max_position_embeddings=512, tie_word_embeddings=True,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(out)
    tok.save_pretrained(out)
    return out
