"""The shared vocabulary: task families, the prompt format, and output parsing.

Training and serving both import `instruct.format`, so the prompt an adapter was
trained on is byte-identical to the one it is served with.
"""

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.format import (
    build_messages,
    render_example,
    render_prompt,
)

__all__ = ["TaskFamily", "build_messages", "render_example", "render_prompt"]
