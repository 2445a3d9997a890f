"""The registry shared by several processes: on a real S3 API (moto's server on loopback) and on
local disk. Every claim here is made with separate processes, as replicas and operators are:
one process's cached view of a store can hide what another wrote.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bioinstruct.registry import Conflict, Registry, sha256_file

FP = "f" * 32
ROOT = Path(__file__).resolve().parents[1]

# A second process that reads the registry when told to (one line on stdin -> one JSON line).
READER = textwrap.dedent("""
    import json, sys
    from bioinstruct.registry import Registry
    reg = Registry(sys.argv[1], cache_dir=None)
    for line in sys.stdin:
        try:
            aliases, bad = reg.read_aliases()
            out = {"aliases": {a: r.target for a, r in aliases.items()}, "bad": bad}
        except Exception as exc:
            out = {"error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(out), flush=True)
""")

PUBLISHER = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from bioinstruct.registry import Registry
    reg = Registry(sys.argv[1])
    folder, count = Path(sys.argv[2]), int(sys.argv[3])
    out = []
    for _ in range(count):
        out.append(reg.publish(folder, name="race", category="IE", base_fingerprint="f" * 32).version)
    print(json.dumps(out), flush=True)
""")

MOVER = textwrap.dedent("""
    import json, sys
    from bioinstruct.registry import Conflict, Registry
    reg = Registry(sys.argv[1])
    refs, rounds = sys.argv[2].split(","), int(sys.argv[3])
    won = lost = 0
    for i in range(rounds):
        generation = reg.alias_generation("ie")
        try:
            reg.set_alias("ie", refs[i % len(refs)], expected_generation=generation)
            won += 1
        except Conflict:
            lost += 1
    print(json.dumps({"won": won, "lost": lost}), flush=True)
""")


@pytest.fixture(scope="module")
def loras(make_lora) -> tuple[Path, Path]:
    return make_lora(seed=31, rank=4), make_lora(seed=32, rank=4)


def _python(script: str, *args: str, stdin=None, stdout=subprocess.PIPE) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", script, *args], cwd=ROOT, stdin=stdin, stdout=stdout,
                            stderr=subprocess.PIPE, text=True)


def _ask(proc: subprocess.Popen) -> dict:
    proc.stdin.write("read\n")
    proc.stdin.flush()
    line = proc.stdout.readline()
    assert line, proc.stderr.read()
    return json.loads(line)


def _url(kind: str, s3, tmp_path: Path) -> str:
    return s3.bucket() if kind == "s3" else str(tmp_path / "registry")


def test_a_second_process_sees_every_change_on_s3(s3, loras):
    """The reproduction from the issue: B reads, A moves `ie` and creates `qa`, B reads again.
    Before the fix B failed with FileExpired forever and never saw `qa`."""
    url = s3.bucket()
    a = Registry(url)
    a.publish(loras[0], name="ie-test", category="IE", base_fingerprint=FP, alias="ie")
    reader = _python(READER, url, stdin=subprocess.PIPE)
    try:
        assert _ask(reader) == {"aliases": {"ie": "ie-test@1"}, "bad": {}}
        a.publish(loras[1], name="ie-test", category="IE", base_fingerprint=FP)
        a.set_alias("ie", "ie-test@2")
        a.set_alias("qa", "ie-test@1")
        assert _ask(reader) == {"aliases": {"ie": "ie-test@2", "qa": "ie-test@1"}, "bad": {}}
        a.rollback("ie")
        a.delete_alias("qa")
        assert _ask(reader) == {"aliases": {"ie": "ie-test@1"}, "bad": {}}
    finally:
        reader.stdin.close()
        reader.wait(timeout=30)


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_two_processes_publishing_at_once_never_overwrite(kind, s3, loras, tmp_path):
    url = _url(kind, s3, tmp_path)
    count = 4
    procs = [_python(PUBLISHER, url, str(folder), str(count)) for folder in loras]
    results = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        results.append(json.loads(out))
    versions = sorted(v for r in results for v in r)
    assert versions == list(range(1, 2 * count + 1)), results  # every number once: none taken twice
    reg = Registry(url, cache_dir=tmp_path / "cache")
    expected = {folder: sha256_file(folder / "adapter_model.safetensors") for folder in loras}
    for folder, mine in zip(loras, results, strict=True):
        for version in mine:
            manifest, local = reg.verify("race", version, base_fingerprint=FP)  # files match their manifest
            assert manifest.files["adapter_model.safetensors"] == expected[folder]  # and are the publisher's own


@pytest.mark.parametrize("kind", ["s3", "local"])
def test_concurrent_alias_moves_are_compare_and_swap(kind, s3, loras, tmp_path):
    url = _url(kind, s3, tmp_path)
    reg = Registry(url)
    reg.publish(loras[0], name="ie-test", category="IE", base_fingerprint=FP, alias="ie")
    reg.publish(loras[1], name="ie-test", category="IE", base_fingerprint=FP)
    start = reg.alias_generation("ie")
    rounds = 15
    procs = [_python(MOVER, url, refs, str(rounds)) for refs in ("ie-test@2,ie-test@1", "ie-test@1,ie-test@2")]
    outcomes = []
    for proc in procs:
        out, err = proc.communicate(timeout=180)
        assert proc.returncode == 0, err
        outcomes.append(json.loads(out))
    won = sum(o["won"] for o in outcomes)
    assert sum(o["won"] + o["lost"] for o in outcomes) == 2 * rounds
    # Every accepted move is one generation: none was silently overwritten by the other writer.
    assert reg.alias_generation("ie") == start + won
    assert reg.alias("ie").generation == start + won


def test_a_stale_expected_generation_is_a_conflict_that_changes_nothing(tmp_path, loras):
    reg = Registry(tmp_path / "registry")
    reg.publish(loras[0], name="ie-test", category="IE", base_fingerprint=FP, alias="ie")
    reg.publish(loras[1], name="ie-test", category="IE", base_fingerprint=FP)
    seen = reg.alias("ie").generation
    reg.set_alias("ie", "ie-test@2", expected_generation=seen)
    with pytest.raises(Conflict, match="generation"):
        reg.set_alias("ie", "ie-test@1", expected_generation=seen)
    rec = reg.alias("ie")
    assert rec.target == "ie-test@2" and rec.history == ["ie-test@1"] and rec.generation == seen + 1


def test_an_unreachable_store_is_an_error_not_an_empty_registry(s3, loras):
    """A store that fails (here: the bucket vanished) must not read as 'no aliases' (that would
    unload everything); RegistryUnavailable or an empty listing of a missing prefix only."""
    import s3fs

    from bioinstruct.registry import RegistryUnavailable

    url = s3.bucket()
    reg = Registry(url)
    reg.publish(loras[0], name="ie-test", category="IE", base_fingerprint=FP, alias="ie")
    bad = Registry(url.replace("s3://", "s3://"), cache_dir=None)
    bad.fs = s3fs.S3FileSystem(skip_instance_cache=True, key="wrong", secret="wrong", retries=1,
                               config_kwargs={"retries": {"max_attempts": 1}, "connect_timeout": 1},
                               client_kwargs={"endpoint_url": "http://127.0.0.1:9"})  # nothing listens
    with pytest.raises(RegistryUnavailable, match="could not be read"):
        bad.read_aliases()
