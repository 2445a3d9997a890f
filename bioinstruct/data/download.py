"""Getting one file's bytes into a `.part` file: over HTTP with resume, or from a local folder."""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path

import httpx

Progress = Callable[[int], None]  # called with each block's size in bytes


class SourceMissing(RuntimeError):
    """This source does not have the file (404, no such path): try the next source."""


class SourceUnavailable(RuntimeError):
    """This source kept failing: try the next source."""


class SourceUnreachable(SourceUnavailable):
    """No connection to this host at all: the caller skips the host's other files too."""


def fetch_http(url: str, part: Path, *, size: int | None, timeout_s: float, retries: int,
               progress: Progress | None = None) -> None:
    """Download `url` into `part`, continuing from the bytes `part` already holds.

    An interrupted transfer (connection dropped, timeout) is retried with an HTTP Range request
    for the missing bytes; a later run continues the same way from the `.part` left behind.
    """
    last: Exception | None = None
    with httpx.Client(timeout=timeout_s, follow_redirects=True) as client:
        for attempt in range(retries + 1):
            if attempt:
                time.sleep(min(0.5 * 2 ** (attempt - 1), 8.0))
            if part.exists() and part.stat().st_nlink > 1:
                part.unlink()  # a link to a mirror's file (see fetch_local): never append to it
            have = part.stat().st_size if part.exists() else 0
            if size is not None and have > size:
                part.unlink()  # longer than the file can be: not a prefix of it
                have = 0
            if size is not None and have == size:
                return  # complete already: the caller verifies it
            # identity: a Range then counts bytes of the file itself, not of a compressed form
            headers = {"Accept-Encoding": "identity", **({"Range": f"bytes={have}-"} if have else {})}
            try:
                with client.stream("GET", url, headers=headers) as response:
                    if response.status_code == 404:
                        raise SourceMissing(f"{url}: 404 Not Found")
                    if response.status_code == 416:  # our prefix is not one of this file
                        part.unlink(missing_ok=True)
                        continue
                    if response.status_code not in (200, 206):
                        raise SourceUnavailable(f"{url}: HTTP {response.status_code}")
                    # 206 continues the .part; 200 means the server sent the whole file again.
                    resumed = response.status_code == 206 and _starts_at(response, have)
                    if have and progress and resumed:
                        progress(have)
                    with part.open("ab" if resumed else "wb") as fh:
                        for block in response.iter_bytes():  # as they arrive: a cut keeps them all
                            fh.write(block)
                            if progress:
                                progress(len(block))
                return
            except httpx.ConnectError as exc:
                if attempt == 0:  # no route, refused, no DNS: retrying would only wait
                    raise SourceUnreachable(f"{url}: cannot connect ({exc})") from None
                last = exc
            except httpx.TransportError as exc:
                last = exc  # what arrived is in .part; the next attempt asks for the rest
    raise SourceUnavailable(f"{url}: {type(last).__name__}: {last} (after {retries + 1} attempts)")


def _starts_at(response: httpx.Response, offset: int) -> bool:
    content_range = response.headers.get("content-range", "")  # "bytes START-END/TOTAL"
    try:
        return int(content_range.split()[1].split("-")[0]) == offset
    except (IndexError, ValueError):
        return False


def fetch_local(src: Path, part: Path, progress: Progress | None = None) -> str:
    """Hard-link `src` as `part` when the filesystem allows it (no copy), else copy it.
    Returns "linked" or "copied"."""
    if not src.is_file():
        raise SourceMissing(f"{src}: no such file")
    part.unlink(missing_ok=True)
    try:
        os.link(src, part)
        how = "linked"
    except OSError:  # another filesystem, or a file we may not link (protected_hardlinks)
        shutil.copyfile(src, part)
        how = "copied"
    if progress:
        progress(part.stat().st_size)
    return how
