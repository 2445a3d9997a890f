"""Shared fixtures. One real vLLM engine serves the whole test session."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from bioinstruct.settings import CoreSettings, apply_offline_env
from tests.s3_server import s3  # noqa: F401 - fixture: a moto S3 server on loopback
from tests.server_process import wait_ready

apply_offline_env()


@pytest.fixture(scope="session")
def core() -> CoreSettings:
    return CoreSettings()


@pytest.fixture(scope="session")
def base_model_dir(core: CoreSettings) -> Path:
    path = core.base_model_dir
    if not (path / "config.json").is_file():
        pytest.fail(f"base model missing at {path}: run `bioinstruct model fetch` (make test does)")
    return path


@pytest.fixture(scope="session")
def tokenizer(base_model_dir: Path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(base_model_dir)


@pytest.fixture(scope="session")
def data_dir(core: CoreSettings) -> Path:
    from bioinstruct.data.fetch import missing_files

    assert core.data_dir is not None
    missing = missing_files(core.data_dir)
    if missing:
        pytest.fail(f"data folder {core.data_dir} lacks {len(missing)} file(s), e.g. {missing[0]}: run "
                    "`bioinstruct data fetch` (make test does), or set BIOINSTRUCT_DATA_DIR to a full copy")
    return core.data_dir


@pytest.fixture(scope="session")
def engine(base_model_dir: Path, tmp_path_factory):
    """The real vLLM engine on the embedded model, started once per session."""
    from bioinstruct.service.engine import EngineProcess, EngineSettings

    # The engine's LoRA resolver (our vLLM plugin) reads the live gateway's registry, so the
    # session exercises loading on request through vLLM's own extension point.
    settings = EngineSettings(log_dir=tmp_path_factory.mktemp("engine-logs"), max_model_len=4096,
                              registry=str(tmp_path_factory.mktemp("registry")),
                              registry_cache=tmp_path_factory.mktemp("registry-cache"))
    proc = EngineProcess(base_model_dir, settings)
    proc.start()
    try:
        proc.wait_healthy()
    except Exception:
        proc.stop()
        raise
    yield proc
    proc.stop()


def _make_lora(base_model_dir: Path, out: Path, seed: int, rank: int = 8, scale: float = 0.5,
               targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
    """A real peft LoRA folder with random, non-zero weights (so it changes the output)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base_model_dir, dtype=torch.float32)
    config = LoraConfig(
        r=rank, lora_alpha=2 * rank, init_lora_weights=False,
        # ("all-linear",): peft's own spelling (what TRL users pass), resolved by peft
        target_modules="all-linear" if targets == ("all-linear",) else list(targets),
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_" in name:
                param.mul_(scale)
    peft_model.save_pretrained(out, safe_serialization=True)
    return out


@pytest.fixture(scope="session")
def make_lora(base_model_dir: Path, tmp_path_factory):
    """Factory: make_lora(seed, rank=8) -> folder of a real random LoRA adapter."""
    cache: dict[tuple, Path] = {}

    def factory(seed: int = 0, rank: int = 8, scale: float = 0.5,
                targets: tuple[str, ...] = ("q_proj", "v_proj")) -> Path:
        key = (seed, rank, scale, targets)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"lora-s{seed}-r{rank}")
            cache[key] = _make_lora(base_model_dir, out, seed, rank, scale, targets)
        return cache[key]

    return factory


def pytest_collection_modifyitems(config, items):
    # Soak tests run only with `make soak` (-m soak).
    if "soak" in (config.getoption("-m") or ""):
        return
    keep = [i for i in items if "soak" not in i.keywords]
    if len(keep) != len(items):
        config.hook.pytest_deselected(items=[i for i in items if "soak" in i.keywords])
        items[:] = keep


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Outcome of every test run so far ({nodeid: "passed" | "failed" | "skipped"}), so that the
# soak report can say which of the run's tests passed instead of leaving it to the reader.
_outcomes: dict[str, str] = {}


@pytest.fixture
def test_outcomes() -> dict[str, str]:
    return _outcomes


def pytest_runtest_logreport(report):
    if report.when == "call" or report.outcome != "passed":
        _outcomes[report.nodeid] = report.outcome


class LiveService:
    """The gateway running for real (uvicorn on a loopback port) in front of the session engine."""

    def __init__(self, app, server, thread, base_url: str, registry: Path, publish_root: Path, admin_token: str):
        self.app = app
        self.server = server
        self.thread = thread
        self.base_url = base_url
        self.registry = registry
        self.publish_root = publish_root
        self.admin_token = admin_token

    @property
    def gateway(self):
        return self.app.state.gateway

    @property
    def admin_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@pytest.fixture(scope="session")
def live_service(engine, tmp_path_factory, core):
    """One gateway for the whole session, on the session engine, with its own empty registry."""
    import threading

    import uvicorn

    from bioinstruct.service.app import create_app
    from bioinstruct.service.engine import free_port
    from bioinstruct.service.settings import ServiceSettings

    registry = Path(engine.settings.registry)  # the one the engine's resolver reads
    publish_root = tmp_path_factory.mktemp("publish")
    admin_token = "test-admin-token"
    settings = ServiceSettings(admin_token=admin_token, publish_root=publish_root, poll_interval_s=0.5,
                               max_inflight=128, max_queue=512, queue_timeout_s=300)
    test_core = core.model_copy(update={"registry": str(registry)})
    app = create_app(settings, core=test_core, engine_settings=engine.settings, engine_process=engine)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, 300)
    yield LiveService(app, server, thread, base_url, registry, publish_root, admin_token)
    server.should_exit = True
    thread.join(timeout=30)
