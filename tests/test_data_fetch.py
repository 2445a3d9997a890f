"""`bioinstruct data fetch`, for real over HTTP on loopback, and the manifest it follows.

A mirror made of real files of the data folder is served by a loopback HTTP server that honours
Range requests and can cut a response midway. Nothing here leaves loopback: the subprocess runs
get a dead proxy for every other host.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit
from xml.sax.saxutils import escape

import pytest

from bioinstruct.data.derive import derive, read_xlsx, xlsx_rows
from bioinstruct.data.fetch import ChecksumMismatch, DataFetchError, Mirror, default_mirrors, fetch
from bioinstruct.data.manifest import load_manifest
from bioinstruct.data.settings import DataSettings
from bioinstruct.settings import CoreSettings

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DATA_DOC = ROOT / "docs" / "DATA.md"
# Small real files for the mirror: two datasets, six files, about 550 KB.
MIRRORED = ("meqsum", "mediqa_qs_2021")
FAST = DataSettings(timeout_s=10, retries=3)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


# ---- a loopback mirror ---------------------------------------------------------------------

class _MirrorServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, root: Path) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.root = root
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.cut_once: set[str] = set()                    # paths whose next response stops midway
        self.sent: dict[str, int] = {}                     # bytes sent by a cut response

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/data"


class _Handler(BaseHTTPRequestHandler):
    server: _MirrorServer

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = unquote(urlsplit(self.path).path)
        self.server.requests.append((path, self.headers.get("Range")))
        file = self.server.root / path.removeprefix("/data/")
        if not path.startswith("/data/") or not file.is_file():
            self.send_error(404)
            return
        body = file.read_bytes()
        start = 0
        if rng := self.headers.get("Range"):
            start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        chunk = body[start:]
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if path in self.server.cut_once:  # promise it all, send half, hang up
            self.server.cut_once.discard(path)
            half = len(chunk) // 2
            self.wfile.write(chunk[:half])
            self.wfile.flush()
            self.server.sent[path] = half
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(chunk)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def mirror_dir(tmp_path: Path, data_dir: Path) -> Path:
    """A copy laid out as ../shared/data holding the real files of MIRRORED."""
    root = tmp_path / "mirror"
    manifest = load_manifest()
    for name in MIRRORED:
        (root / name).mkdir(parents=True)
        for file_name in manifest.datasets[name].files:
            shutil.copyfile(data_dir / name / file_name, root / name / file_name)
    return root


@pytest.fixture
def server(mirror_dir: Path):
    srv = _MirrorServer(mirror_dir)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
    thread.join(timeout=5)


def _requests_for(srv: _MirrorServer, rel: str) -> list[str | None]:
    return [rng for path, rng in srv.requests if path == f"/data/{rel}"]


def _no_parts(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.name.endswith(".part")]


# ---- fetching over HTTP --------------------------------------------------------------------

def test_an_empty_folder_is_filled_from_the_mirror_and_verified(server, tmp_path):
    dest = tmp_path / "empty"
    outcomes = fetch(dest, only=MIRRORED, mirrors=[Mirror(server.url)], upstream=False, settings=FAST)
    manifest = load_manifest()
    expected = [f"{n}/{f}" for n in MIRRORED for f in manifest.datasets[n].files]
    assert sorted(outcomes) == sorted(expected)
    for rel in expected:
        ds, name = rel.split("/")
        assert sha256(dest / rel) == manifest.datasets[ds].files[name].sha256, rel
        assert outcomes[rel] == f"downloaded from {server.url}/{rel}"
        assert _requests_for(server, rel) == [None]  # one whole-file GET each
    assert not _no_parts(dest)

    # A second run finds everything in place and asks the mirror for nothing.
    before = len(server.requests)
    again = fetch(dest, only=MIRRORED, mirrors=[Mirror(server.url)], upstream=False, settings=FAST)
    assert set(again.values()) == {"present"}
    assert len(server.requests) == before


def test_a_corrupted_file_is_refused_with_its_name_and_expected_checksum(server, mirror_dir, tmp_path):
    bad = mirror_dir / "meqsum" / "meqsum_all.jsonl"
    data = bytearray(bad.read_bytes())
    data[1000] ^= 0x01  # one bit
    bad.write_bytes(bytes(data))
    expected = load_manifest().datasets["meqsum"].files["meqsum_all.jsonl"].sha256
    dest = tmp_path / "dest"
    with pytest.raises(ChecksumMismatch) as info:
        fetch(dest, only=["meqsum"], mirrors=[Mirror(server.url)], upstream=False, settings=FAST)
    message = str(info.value)
    assert "meqsum/meqsum_all.jsonl" in message
    assert f"expected {expected}" in message
    assert hashlib.sha256(bytes(data)).hexdigest() in message  # what it got
    assert not (dest / "meqsum" / "meqsum_all.jsonl").exists()
    assert not _no_parts(dest)


def test_an_interrupted_download_resumes_with_a_range_request(server, tmp_path):
    rel = "meqsum/meqsum_all.jsonl"
    server.cut_once.add(f"/data/{rel}")
    dest = tmp_path / "dest"
    outcomes = fetch(dest, only=["meqsum"], mirrors=[Mirror(server.url)], upstream=False, settings=FAST)
    assert outcomes[rel].startswith("downloaded from")
    sent = server.sent[f"/data/{rel}"]
    assert sent > 0
    # The first request was cut after `sent` bytes; the second asked for exactly the rest.
    assert _requests_for(server, rel) == [None, f"bytes={sent}-"]
    assert sha256(dest / rel) == load_manifest().datasets["meqsum"].files["meqsum_all.jsonl"].sha256


def test_a_part_file_left_by_an_earlier_run_is_continued_not_restarted(server, mirror_dir, tmp_path):
    rel = "meqsum/meqsum_all.jsonl"
    dest = tmp_path / "dest"
    (dest / "meqsum").mkdir(parents=True)
    (dest / f"{rel}.part").write_bytes((mirror_dir / rel).read_bytes()[:100_000])
    fetch(dest, only=["meqsum"], mirrors=[Mirror(server.url)], upstream=False, settings=FAST)
    assert _requests_for(server, rel) == ["bytes=100000-"]
    assert sha256(dest / rel) == sha256(mirror_dir / rel)
    assert not _no_parts(dest)


def test_a_stale_part_file_that_is_no_prefix_is_downloaded_whole(server, mirror_dir, tmp_path):
    rel = "meqsum/meqsum_all.jsonl"
    dest = tmp_path / "dest"
    (dest / "meqsum").mkdir(parents=True)
    (dest / f"{rel}.part").write_bytes(b"x" * 5000)
    fetch(dest, only=["meqsum"], mirrors=[Mirror(server.url)], upstream=False, settings=FAST)
    assert _requests_for(server, rel) == ["bytes=5000-", None]
    assert sha256(dest / rel) == sha256(mirror_dir / rel)


def test_a_wrong_file_already_in_the_folder_is_replaced(server, tmp_path, mirror_dir):
    rel = "mediqa_qs_2021/mediqa_qs_test.jsonl"
    dest = tmp_path / "dest"
    (dest / "mediqa_qs_2021").mkdir(parents=True)
    (dest / rel).write_text("edited by hand\n")
    outcomes = fetch(dest, only=["mediqa_qs_2021"], mirrors=[Mirror(server.url)], upstream=False,
                     settings=FAST)
    assert outcomes[rel].startswith("downloaded")
    assert sha256(dest / rel) == sha256(mirror_dir / rel)


def test_a_mirror_without_the_file_and_no_upstream_is_a_clear_error(server, tmp_path):
    with pytest.raises(DataFetchError) as info:
        fetch(tmp_path / "dest", only=["chemprot"], mirrors=[Mirror(server.url)], upstream=False,
              settings=FAST)
    assert "chemprot/LICENSE_scibert.txt: no source had it" in str(info.value)
    assert "404" in str(info.value) and "BIOINSTRUCT_DATA_MIRROR" in str(info.value)


def test_the_fetched_folder_feeds_a_real_converter_and_the_task_files(server, tmp_path, data_dir):
    from bioinstruct.generation.converters import convert_meqsum
    from bioinstruct.instruct.benchmark import load_task

    dest = tmp_path / "fetched"
    fetch(dest, only=MIRRORED, mirrors=[Mirror(server.url)], upstream=False, settings=FAST)
    records = convert_meqsum(dest)
    first = json.loads((data_dir / "meqsum" / "meqsum_all.jsonl").open().readline())
    assert len(records) == 1000
    assert records[0].output == first["summary"].strip() and first["chq"] in records[0].input
    assert len(load_task("meqsum_heldout").load("test", dest)) == 200
    assert len(load_task("mediqa_qs").load("test", dest)) == 100
    assert len(load_task("mediqa_qs").load("dev", dest)) == 50


def test_a_local_folder_mirror_is_linked_or_copied(mirror_dir, tmp_path):
    dest = tmp_path / "dest"
    outcomes = fetch(dest, only=["meqsum"], mirrors=[Mirror(str(mirror_dir))], upstream=False)
    assert all(re.fullmatch(r"(linked|copied) from .*", o) for o in outcomes.values()), outcomes
    assert sha256(dest / "meqsum/meqsum_all.jsonl") == sha256(mirror_dir / "meqsum/meqsum_all.jsonl")


def test_derived_files_missing_from_the_mirror_are_derived_from_verified_inputs(tmp_path, data_dir):
    from bioinstruct.generation.converters import convert_pubmedqa

    mirror = tmp_path / "mirror" / "pubmedqa_pqal"
    mirror.mkdir(parents=True)
    for name in ("LICENSE", "README.md", "ori_pqal.json", "test_ground_truth.json"):
        shutil.copyfile(data_dir / "pubmedqa_pqal" / name, mirror / name)
    dest = tmp_path / "dest"
    outcomes = fetch(dest, only=["pubmedqa_pqal"], mirrors=[Mirror(str(mirror.parent))], upstream=True)
    for name in ("pqal_test_set.json", "pqal_trainval_set.json"):
        assert outcomes[f"pubmedqa_pqal/{name}"].startswith("derived (pubmedqa_split)")
        assert sha256(dest / "pubmedqa_pqal" / name) == sha256(data_dir / "pubmedqa_pqal" / name)
    trainval = json.loads((dest / "pubmedqa_pqal/pqal_trainval_set.json").read_text())
    assert len(convert_pubmedqa(dest)) == len(trainval) == 500


# ---- derivations reproduce the reference copy, byte for byte --------------------------------

def test_conll_and_pubmedqa_steps_reproduce_the_reference_files(tmp_path, data_dir):
    manifest = load_manifest()
    checked = []
    for ds, dataset in manifest.datasets.items():
        for name, entry in dataset.files.items():
            if entry.derive is None or entry.derive.upstream is not None:
                continue
            out = tmp_path / f"{ds}-{name}"
            derive(entry.derive, [data_dir / ds / inp for inp in entry.derive.inputs], out)
            assert sha256(out) == entry.sha256, f"{ds}/{name}"
            checked.append(f"{ds}/{name}")
    assert len(checked) == 8  # BC5CDR and BC2GM train/devel/test entities, PubMedQA test and trainval


def _write_xlsx(path: Path, header: list[str], rows: list[list[object]]) -> None:
    """A minimal real .xlsx: shared strings, one inline string cell, numbers as numbers."""
    strings: list[str] = []

    def cell(ref: str, value: object, inline: bool) -> str:
        if isinstance(value, int):
            return f'<c r="{ref}"><v>{value}</v></c>'
        text = escape(str(value)).replace("\r", "_x000D_")
        if inline:
            return f'<c r="{ref}" t="inlineStr"><is><t xml:space="preserve">{text}</t></is></c>'
        strings.append(text)
        return f'<c r="{ref}" t="s"><v>{len(strings) - 1}</v></c>'

    body = []
    for r, values in enumerate([header, *rows], start=1):
        cells = "".join(cell(f"{chr(65 + c)}{r}", v, inline=(r == 2 and c == 1))
                        for c, v in enumerate(values))
        body.append(f'<row r="{r}">{cells}</row>')
    main = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
    rel = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("xl/workbook.xml", f'<workbook xmlns="{main}" xmlns:r="{rel}"><sheets>'
                    '<sheet name="Sheet1" sheetId="1" r:id="rId1"/></sheets></workbook>')
        zf.writestr("xl/_rels/workbook.xml.rels",
                    '<Relationships xmlns="http://schemas.openxmlformats.org/package/2006/relationships">'
                    f'<Relationship Id="rId1" Type="{rel}/worksheet" Target="worksheets/sheet1.xml"/>'
                    '</Relationships>')
        zf.writestr("xl/worksheets/sheet1.xml", f'<worksheet xmlns="{main}"><sheetData>{"".join(body)}'
                    '<row r="9999"></row></sheetData></worksheet>')
        zf.writestr("xl/sharedStrings.xml", f'<sst xmlns="{main}">'
                    + "".join(f'<si><t xml:space="preserve">{s}</t></si>' for s in strings) + "</sst>")


@pytest.mark.parametrize("ds,name", [("meqsum", "meqsum_all.jsonl"),
                                     ("mediqa_qs_2021", "mediqa_qs_validation.jsonl"),
                                     ("mediqa_qs_2021", "mediqa_qs_test.jsonl")])
def test_the_xlsx_step_writes_the_reference_bytes_from_a_sheet_of_the_same_cells(tmp_path, data_dir, ds,
                                                                                  name):
    # The upstream .xlsx cannot be downloaded here (no GitHub): a sheet holding the reference rows'
    # cells stands in, so this checks the reader and the JSON Lines writer, not the upstream file.
    step = load_manifest().datasets[ds].files[name].derive
    rows = [json.loads(line) for line in (data_dir / ds / name).open(encoding="utf-8")]
    sheet = tmp_path / "sheet.xlsx"
    _write_xlsx(sheet, [f.title() for f in step.fields], [[row[f] for f in step.fields] for row in rows])
    assert read_xlsx(sheet)[0] == [f.title() for f in step.fields]
    made = xlsx_rows(sheet, step.fields, step.index_field)
    assert hashlib.sha256(made).hexdigest() == sha256(data_dir / ds / name)


# ---- the manifest --------------------------------------------------------------------------

def test_every_url_is_pinned_to_a_commit():
    manifest = load_manifest()
    urls = []
    for dataset in manifest.datasets.values():
        for entry in dataset.files.values():
            for up in (entry.upstream, entry.derive.upstream if entry.derive else None):
                if up is not None:
                    urls.append((manifest.raw_url(up), manifest.repositories[up.repo].commit))
    assert len(urls) == 33  # 30 verbatim files and 3 spreadsheets
    for url, commit in urls:
        assert re.fullmatch(r"[0-9a-f]{40}", commit)
        assert re.match(rf"^https://raw\.githubusercontent\.com/[\w.-]+/[\w.-]+/{commit}/\S+$", url), url


def test_the_pins_are_the_commits_the_reference_copy_records(data_dir):
    # ../shared/data/<dataset>/SOURCE.md names the repository and commit each copy came from.
    manifest = load_manifest()
    sources = {ds: data_dir / ds / "SOURCE.md" for ds in manifest.datasets}
    if not all(p.is_file() for p in sources.values()):
        pytest.skip("the data folder is a fetched copy, without the reference copy's SOURCE.md files")
    for ds, dataset in manifest.datasets.items():
        text = sources[ds].read_text(encoding="utf-8")
        repos = {e.upstream.repo for e in dataset.files.values() if e.upstream}
        repos |= {e.derive.upstream.repo for e in dataset.files.values() if e.derive and e.derive.upstream}
        for repo in repos:
            pin = manifest.repositories[repo]
            assert pin.url.removeprefix("https://github.com/") in text and pin.commit in text, (ds, repo)


def test_every_file_the_task_files_and_converters_read_is_in_the_manifest(tmp_path, data_dir):
    from bioinstruct.generation.converters import CONVERTERS
    from bioinstruct.instruct.benchmark import all_tasks

    manifest = load_manifest()
    listed = set(manifest.relpaths())
    for task in all_tasks():
        for split in task.splits.values():
            assert split.path in listed, (task.name, split.path)
    # Data files named in the code itself (bench's prompts, scripts): "<dataset>/<file>" literals.
    folders = "|".join(manifest.datasets)
    named = {m for folder in ("bench", "eval", "generation", "instruct", "scripts", "service", "training")
             for py in (ROOT / folder).rglob("*.py")
             for m in re.findall(rf"[\"']((?:{folders})/[\w.-]+)[\"']", py.read_text(encoding="utf-8"))}
    assert "mediqa_qs_2021/mediqa_qs_test.jsonl" in named  # bench's prompts: the scan sees the code
    assert named <= listed, named - listed
    # A folder holding only the manifest's files is enough for every converter and every split.
    only = tmp_path / "only-listed"
    for rel in listed:
        (only / rel).parent.mkdir(parents=True, exist_ok=True)
        (only / rel).symlink_to(data_dir / rel)
    for name, convert in CONVERTERS.items():
        assert convert(only), name
    for task in all_tasks():
        for split in task.splits:
            assert task.load(split, only), (task.name, split)


def test_the_data_folder_matches_the_manifest(data_dir):
    manifest = load_manifest()
    wrong = [f"{ds}/{name}" for ds, dataset in manifest.datasets.items()
             for name, entry in dataset.files.items() if sha256(data_dir / ds / name) != entry.sha256]
    assert not wrong


# ---- settings, CLI and docs ----------------------------------------------------------------

def test_the_default_data_folder_is_the_shared_copy_when_present_else_inside_the_clone(tmp_path, monkeypatch):
    monkeypatch.delenv("BIOINSTRUCT_DATA_MIRROR", raising=False)  # a mirror of the caller's own is not a default
    clone = tmp_path / "clone"
    clone.mkdir()
    alone = CoreSettings(home=clone)
    assert alone.data_dir == clone / "data" / "datasets"
    assert default_mirrors(alone, DataSettings()) == []
    (tmp_path / "shared" / "data").mkdir(parents=True)
    beside = CoreSettings(home=clone)
    assert beside.data_dir == tmp_path / "shared" / "data"
    assert default_mirrors(beside, DataSettings(mirror="http://m.test/d")) == [
        Mirror("http://m.test/d"), Mirror(str(tmp_path / "shared" / "data"))]


def _offline_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BIOINSTRUCT_")}
    # Any host but loopback goes to a dead proxy: nothing can leave this machine.
    env.update(HTTP_PROXY="http://127.0.0.1:9", HTTPS_PROXY="http://127.0.0.1:9",
               NO_PROXY="127.0.0.1,localhost", BIOINSTRUCT_DATA_RETRIES="1", COLUMNS="200")
    env.update(extra)
    return env


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "bioinstruct"), *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_version_prints_the_package_version():
    from importlib.metadata import version

    proc = _cli("--version", env=_offline_env())
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"bioinstruct {version('bioinstruct')}"


def test_the_project_copy_beside_the_clone_is_used_without_network(tmp_path, mirror_dir):
    clone = tmp_path / "clone"
    clone.mkdir()
    shutil.copytree(mirror_dir, tmp_path / "shared" / "data")
    dest = tmp_path / "dest"
    proc = _cli("data", "fetch", "--only", "meqsum", env=_offline_env(
        BIOINSTRUCT_HOME=str(clone), BIOINSTRUCT_DATA_DIR=str(dest)))
    assert proc.returncode == 0, proc.stderr
    assert f"from {tmp_path / 'shared' / 'data' / 'meqsum'}" in proc.stdout
    assert "licence: CC BY 4.0" in proc.stdout
    assert sha256(dest / "meqsum/meqsum_all.jsonl") == sha256(mirror_dir / "meqsum/meqsum_all.jsonl")


def test_cli_errors_say_what_to_change_without_a_traceback(server, mirror_dir, tmp_path):
    clone = tmp_path / "clone"
    clone.mkdir()
    env = _offline_env(BIOINSTRUCT_HOME=str(clone))
    unknown = _cli("data", "fetch", "--only", "nope", "--dest", str(tmp_path / "d"), env=env)
    assert unknown.returncode == 2
    assert "unknown dataset(s) nope; choose from pubmedqa_pqal" in unknown.stderr
    (mirror_dir / "meqsum" / "README.md").write_text("not the README\n")
    bad = _cli("data", "fetch", "--only", "meqsum", "--dest", str(tmp_path / "d"), "--mirror", server.url,
               env=env)
    assert bad.returncode == 2
    assert "meqsum/README.md from" in bad.stderr and "expected e9bb48a127be" in bad.stderr
    assert "Traceback" not in bad.stderr + bad.stdout
    # No mirror has chemprot and GitHub is out of reach: the error names the file and the fix.
    offline = _cli("data", "fetch", "--only", "chemprot", "--dest", str(tmp_path / "d"), env=env)
    assert offline.returncode == 2
    assert "chemprot/LICENSE_scibert.txt: no source had it" in offline.stderr
    assert "BIOINSTRUCT_DATA_MIRROR" in offline.stderr and "Traceback" not in offline.stderr


# Stand-ins the doc uses for a user's paths and server, and what this test puts there.
DOC_MIRROR_URL = "https://mirror.example.org/bioinstruct-data"
DOC_MIRROR_DIR = "/mnt/bioinstruct-data"
DOC_DEST = "/srv/bioinstruct-data"


def _doc_commands() -> list[str]:
    text = DATA_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    lines = [line.split(" #")[0].strip() for block in blocks for line in block.splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_every_command_in_data_md_runs(server, mirror_dir, tmp_path, data_dir):
    commands = _doc_commands()
    assert any("BIOINSTRUCT_DATA_MIRROR" in c for c in commands) and any("--mirror" in c for c in commands)
    clone = tmp_path / "clone"
    clone.mkdir()
    for n, command in enumerate(commands):
        dest = tmp_path / f"dest{n}"
        line = (command.replace(DOC_MIRROR_URL, server.url).replace(DOC_MIRROR_DIR, str(mirror_dir))
                .replace(DOC_DEST, str(dest)))
        words = shlex.split(line)
        env = _offline_env(BIOINSTRUCT_DATA_DIR=str(data_dir), BIOINSTRUCT_DATA_MIRROR=server.url,
                           BIOINSTRUCT_HOME=str(clone))
        while "=" in words[0]:
            key, value = words.pop(0).split("=", 1)
            env[key] = value
        assert words[0] == "bioinstruct", command
        proc = _cli(*words[1:], env=env)
        assert proc.returncode == 0, f"{command}\n{proc.stdout}\n{proc.stderr}"
        if DOC_DEST in command:
            assert sha256(dest / "meqsum/meqsum_all.jsonl") == sha256(mirror_dir / "meqsum/meqsum_all.jsonl")
        if command.split()[-1] == "list":
            assert "raw.githubusercontent.com" in proc.stdout and "licence:" in proc.stdout
