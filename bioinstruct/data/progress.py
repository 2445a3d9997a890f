"""The CLI's reporter: fetch's lines, plus a progress bar for each file that moves."""

from __future__ import annotations

from collections.abc import Callable

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TransferSpeedColumn,
)

from bioinstruct.data.fetch import Reporter


class RichReporter(Reporter):
    def __init__(self, console: Console | None = None) -> None:
        self.console = console or Console(highlight=False)
        super().__init__(lambda text: self.console.print(escape(text), soft_wrap=True))
        self.progress = Progress(TextColumn("  {task.description}"), BarColumn(), DownloadColumn(),
                                 TransferSpeedColumn(), console=self.console, transient=True)
        self._bar: TaskID | None = None

    def __enter__(self) -> RichReporter:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def transfer(self, relpath: str, size: int) -> Callable[[int], None]:
        self._drop_bar()
        task_id = self.progress.add_task(escape(relpath), total=size or None)
        self._bar = task_id
        return lambda n: self.progress.advance(task_id, n)

    def file(self, relpath: str, outcome: str) -> None:
        self._drop_bar()  # the bar goes, the file's line stays
        super().file(relpath, outcome)

    def _drop_bar(self) -> None:
        if self._bar is not None:
            self.progress.remove_task(self._bar)
            self._bar = None
