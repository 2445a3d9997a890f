"""The 80 human-written biomedical seed tasks that Self-Instruct generation starts from.

`seed_tasks.jsonl` holds one task a line. Output conventions follow `instruct.prompts`, so
the seeds teach the formats the service parses: entities as 'Type: mention' lines (mentions
copied verbatim from the input) or 'None', relations as 'head | RELATION | tail' lines, and
multiple-choice answers as the exact text of one listed option.

The code lives in `seeds.schema`; import from there when the package may have been
installed (editable) before this `__init__` existed, which makes `seeds` a namespace package.
"""

from bioinstruct.seeds.schema import SEEDS_PATH, SeedTask, load_seeds

__all__ = ["SEEDS_PATH", "SeedTask", "load_seeds"]
