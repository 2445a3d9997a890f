"""Instruction data: the Self-Instruct loop, dataset converters, dedup and decontamination."""
