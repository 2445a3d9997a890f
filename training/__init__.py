"""LoRA fine-tuning (peft + transformers under accelerate), checkpoint/resume, publishing to the registry.

`bioinstruct train` trains one adapter, `bioinstruct train-all` one per task family and one
on all families. See docs/TRAINING.md.
"""
