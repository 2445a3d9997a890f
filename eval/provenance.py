"""The command that produced a report, as a reader would type it again (every figure names it)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path


def current_command(argv: list[str] | None = None) -> str:
    """`bioinstruct ...` for the console script; `python -m <module> ...` for a module run with -m."""
    argv = list(sys.argv if argv is None else argv)
    if not argv:
        return ""
    name = Path(argv[0]).name
    if name in ("bioinstruct", "cli.py"):
        argv[0] = "bioinstruct"
    elif name.endswith(".py"):
        spec = getattr(sys.modules.get("__main__"), "__spec__", None)
        argv = ["python", "-m", spec.name, *argv[1:]] if spec is not None else ["python", *argv]
    return shlex.join(argv)
