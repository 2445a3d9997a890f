"""Every `--help` text reaches the user whole.

Typer renders help through rich, and rich reads `[...]` as markup: a help string such as
"Output JSONL [default: data/x.jsonl]" was printed as "Output JSONL ." — the default
vanished without an error. This walks every command of the real `bioinstruct` CLI.
"""

from __future__ import annotations

import typer
from rich.markup import render
from typer.testing import CliRunner

from bioinstruct import cli


def _commands():
    cli._register_subcommands()
    root = typer.main.get_command(cli.app)

    def walk(command, path):
        yield " ".join(path), command
        # typer ships its own click: test for a group by shape, not by class
        if hasattr(command, "commands"):
            for name, sub in command.commands.items():
                yield from walk(sub, [*path, name])

    return list(walk(root, ["bioinstruct"]))


def test_the_walk_sees_every_package_command():
    names = {name for name, _ in _commands()}
    for expected in ("bioinstruct serve", "bioinstruct generate", "bioinstruct train",
                     "bioinstruct eval", "bioinstruct bench serving", "bioinstruct model fetch"):
        assert expected in names


def test_no_help_text_is_eaten_by_rich_markup():
    eaten = []
    for name, command in _commands():
        texts = [command.help or ""] + [getattr(p, "help", None) or "" for p in command.params]
        eaten += [(name, t, render(t).plain) for t in texts if render(t).plain != t]
    assert not eaten, "help text with [...] that rich drops; use (...) instead:\n" + "\n".join(
        f"{name}: {text!r} is shown as {shown!r}" for name, text, shown in eaten)


def test_generate_help_shows_its_defaults():
    result = CliRunner().invoke(cli.app, ["generate", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    assert "(default: http://127.0.0.1:8000/v1, the service)" in result.output
