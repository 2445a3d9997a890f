"""`bioinstruct serve` and `bioinstruct engine`.

Every setting is an option, generated from the settings classes themselves (CoreSettings,
ServiceSettings, EngineSettings, ObservabilitySettings): a new field is a new option with no
change here. An option's name is vLLM's where the setting means the same as vLLM's flag
(`--model`, `--max-loras`, `--served-model-name`, ...), else its environment variable without
the prefix (`BIOINSTRUCT_MAX_QUEUE` is `--max-queue`, `BIOINSTRUCT_ENGINE_KV_CACHE_GIB` is
`--engine-kv-cache-gib`). The environment stays the default and a flag wins: the command
turns each flag given into its variable, validates all of them together, and exports them,
so every part of the process (and the engine it starts) reads the same values.
"""

from __future__ import annotations

import importlib.util
import inspect
import json
import logging
import os
import signal
import sys
import typing
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from unittest import mock

import typer
from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, NoDecode
from pydantic_settings.exceptions import SettingsError

from bioinstruct.model import BaseModelError, BaseModelInfo, ensure_base_model
from bioinstruct.service.engine import EngineSettings
from bioinstruct.service.observability import ObservabilitySettings
from bioinstruct.service.settings import ServiceSettings
from bioinstruct.settings import CoreSettings, core_settings

# vLLM's own flag names, for the settings that mean what vLLM's flag means
# (`python -m vllm.entrypoints.openai.api_server --help`).
VLLM_FLAGS: dict[str, str] = {
    "BIOINSTRUCT_BASE_MODEL": "--model",
    "BIOINSTRUCT_BASE_MODEL_REVISION": "--revision",
    "BIOINSTRUCT_MODEL_CACHE": "--download-dir",
    "BIOINSTRUCT_API_KEYS": "--api-key",
    "BIOINSTRUCT_ENGINE_SERVED_NAME": "--served-model-name",
    "BIOINSTRUCT_ENGINE_MAX_LORAS": "--max-loras",
    "BIOINSTRUCT_ENGINE_MAX_CPU_LORAS": "--max-cpu-loras",
    "BIOINSTRUCT_ENGINE_MAX_LORA_RANK": "--max-lora-rank",
    "BIOINSTRUCT_ENGINE_MAX_MODEL_LEN": "--max-model-len",
    "BIOINSTRUCT_ENGINE_MAX_NUM_SEQS": "--max-num-seqs",
    "BIOINSTRUCT_ENGINE_DTYPE": "--dtype",
    "BIOINSTRUCT_ENGINE_GPU_MEMORY_UTILIZATION": "--gpu-memory-utilization",
    "BIOINSTRUCT_ENGINE_SEED": "--seed",
    "BIOINSTRUCT_ENGINE_ENABLE_LORA": "--enable-lora",
    "BIOINSTRUCT_ENGINE_ENABLE_PREFIX_CACHING": "--enable-prefix-caching",
    "BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES": "--lora-target-modules",
}

# One line for a setting whose field has no description of its own (a field's `description`
# wins). A setting missing here still gets its option, variable and default.
HELP: dict[str, str] = {
    "BIOINSTRUCT_HOST": "Gateway bind address.",
    "BIOINSTRUCT_PORT": "Gateway port.",
    "BIOINSTRUCT_ENGINE_URL": "Attach to a vLLM server someone else runs instead of starting one.",
    "BIOINSTRUCT_ENGINE_RESTART": "Restart the engine when it exits.",
    "BIOINSTRUCT_API_KEYS": "Bearer keys for inference: a key (all adapters; repeat the option or "
                            "comma-separate), or a JSON object giving each key its list of adapters. "
                            "None: inference is open. Prefer the variable: a command line is visible "
                            "to other users.",
    "BIOINSTRUCT_ADMIN_TOKEN": "Bearer token of the /admin routes; none: admin routes off. "
                               "Prefer the variable.",
    "BIOINSTRUCT_MAX_INFLIGHT": "Requests running against the engine at once.",
    "BIOINSTRUCT_MAX_QUEUE": "Requests waiting for a slot; beyond it, 429 with Retry-After.",
    "BIOINSTRUCT_QUEUE_TIMEOUT_S": "Longest wait for a slot before 429.",
    "BIOINSTRUCT_RETRY_AFTER_S": "Retry-After of a 429.",
    "BIOINSTRUCT_MAX_TOKENS_LIMIT": "Largest max_tokens a caller may ask.",
    "BIOINSTRUCT_QA_ADAPTER": "/qa's default adapter: an alias, base or auto.",
    "BIOINSTRUCT_EXTRACT_ADAPTER": "/extract's default adapter: an alias, base or auto.",
    "BIOINSTRUCT_GENERATE_ADAPTER": "/generate's default adapter: an alias, base or auto.",
    "BIOINSTRUCT_QA_METHOD": "/qa's default way to pick an option: logprob, constrained or generate.",
    "BIOINSTRUCT_QA_TOP_LOGPROBS": "Next-token alternatives read per QA scoring step.",
    "BIOINSTRUCT_SHIPPED_ADAPTERS": "Folder of shipped adapters published on start (unset: adapters/); "
                                    "off: none.",
    "BIOINSTRUCT_PUBLISH_ROOT": "Admin publish takes folders under this root only (default <home>/runs).",
    "BIOINSTRUCT_MAX_BODY_BYTES": "Largest request body.",
    "BIOINSTRUCT_BODY_TIMEOUT_S": "A request body must arrive within this time (else 408).",
    "BIOINSTRUCT_POLL_INTERVAL_S": "How often the registry is read for alias changes.",
    "BIOINSTRUCT_REGISTRY_STALE_AFTER_S": "A registry unreadable this long fails readiness.",
    "BIOINSTRUCT_PRELOAD_ADAPTERS": "Aliases loaded at start (repeat the option or comma-separate; \"\" for "
                                    "none). Default: the route defaults.",
    "BIOINSTRUCT_STICKY_HEADER": "Request header that keeps a caller on one version of a weighted alias.",
    "BIOINSTRUCT_DRAIN_TIMEOUT_S": "Longest wait for requests on a replaced version before it is unloaded.",
    "BIOINSTRUCT_SHUTDOWN_GRACE_S": "On SIGTERM, how long running requests may take to finish.",
    "BIOINSTRUCT_ENGINE_REQUEST_TIMEOUT_S": "Timeout of one engine request.",
    "BIOINSTRUCT_ENGINE_CONNECT_TIMEOUT_S": "Timeout to connect to the engine.",
    "BIOINSTRUCT_ENGINE_HOST": "Engine bind address (loopback only).",
    "BIOINSTRUCT_ENGINE_PORT": "Engine port; 0 picks a free one.",
    "BIOINSTRUCT_ENGINE_DEVICE": "auto, cpu or cuda.",
    "BIOINSTRUCT_ENGINE_SERVED_NAME": "The engine's name for the base model (what `model` names it).",
    "BIOINSTRUCT_ENGINE_DTYPE": "Weights' dtype (unset: float32 on CPU, auto on GPU).",
    "BIOINSTRUCT_ENGINE_MAX_MODEL_LEN": "Longest prompt plus completion, in tokens.",
    "BIOINSTRUCT_ENGINE_MAX_NUM_SEQS": "Sequences in one batch (unset: vLLM's default).",
    "BIOINSTRUCT_ENGINE_MAX_LORAS": "Adapters in one batch.",
    "BIOINSTRUCT_ENGINE_MAX_CPU_LORAS": "Adapters kept in the engine's LoRA cache.",
    "BIOINSTRUCT_ENGINE_MAX_LORA_RANK": "Largest adapter rank the engine accepts.",
    "BIOINSTRUCT_ENGINE_ENABLE_LORA": "LoRA on; off serves the base model only.",
    "BIOINSTRUCT_ENGINE_LORA_TARGET_MODULES": "Layers that get LoRA, in vLLM's fused names (repeat the "
                                              "option); an empty JSON list for every layer.",
    "BIOINSTRUCT_ENGINE_FAST_CPU_LORA": "CPU: our plugin's grouped LoRA kernels; off runs vLLM's own.",
    "BIOINSTRUCT_ENGINE_KV_CACHE_GIB": "CPU: KV cache size in GiB.",
    "BIOINSTRUCT_ENGINE_GPU_MEMORY_UTILIZATION": "Fraction of memory for the engine (unset: 0.3 on CPU, "
                                                 "0.9 on GPU).",
    "BIOINSTRUCT_ENGINE_CPU_THREADS_BIND": "CPU: cores for the engine's threads, e.g. 0-3 (default: all).",
    "BIOINSTRUCT_ENGINE_ENABLE_PREFIX_CACHING": "Reuse the KV cache of shared prompt prefixes.",
    "BIOINSTRUCT_ENGINE_SEED": "Engine seed.",
    "BIOINSTRUCT_ENGINE_CPU_NICE": "CPU: the engine's nice level (0-19), so the gateway stays responsive.",
    "BIOINSTRUCT_ENGINE_EXTRA_ARGS": "More vLLM flags, passed as they are (repeat the option as "
                                     "--engine-extra-args=--flag, or a JSON list).",
    "BIOINSTRUCT_ENGINE_REGISTRY": "Registry the engine's LoRA resolver reads (default: the gateway's).",
    "BIOINSTRUCT_ENGINE_REGISTRY_CACHE": "Local cache of a remote registry for the resolver.",
    "BIOINSTRUCT_ENGINE_STARTUP_TIMEOUT_S": "Longest wait for the engine to become healthy.",
    "BIOINSTRUCT_ENGINE_STOP_GRACE_S": "Seconds between SIGTERM and SIGKILL when the engine stops.",
    "BIOINSTRUCT_ENGINE_LOG_DIR": "Folder of the engine's log (default .cache/logs).",
    "BIOINSTRUCT_LOG_FORMAT": "text or json log lines.",
    "BIOINSTRUCT_OTEL_ENABLED": "OpenTelemetry traces (needs the otel extra).",
}

SERVE_CLASSES: tuple[tuple[type[BaseSettings], str], ...] = (
    (CoreSettings, "Base model and paths"),
    (ServiceSettings, "Gateway"),
    (EngineSettings, "Engine (vLLM)"),
    (ObservabilitySettings, "Logs and traces"),
)
ENGINE_CLASSES = (SERVE_CLASSES[0], SERVE_CLASSES[2])


class SettingsInputError(ValueError):
    """A flag or variable with a value its setting does not take; the message names both."""


@dataclass(frozen=True)
class SettingOption:
    """One setting as a command-line option."""

    cls: type[BaseSettings]
    field: str
    env: str
    flag: str
    param: str  # the Python name typer passes the value under
    kind: str  # "bool" (--x/--no-x), "many" (repeatable) or "one"
    decode_json: bool  # a list/dict the environment gives as JSON
    panel: str

    @property
    def label(self) -> str:
        return f"{self.flag} ({self.env})"


def _prefix(cls: type[BaseSettings]) -> str:
    return str(cls.model_config.get("env_prefix") or "")


def _kind(annotation: Any) -> tuple[str, bool]:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if annotation is bool or (args and all(a is bool for a in args)):
        return "bool", False
    if origin in (list, dict) or any(typing.get_origin(a) in (list, dict) for a in args):
        return "many", True
    return "one", False


def setting_options(classes: Iterable[tuple[type[BaseSettings], str]]) -> list[SettingOption]:
    """Every field of the classes as an option; refuses two settings under one flag or variable."""
    options: list[SettingOption] = []
    for cls, panel in classes:
        for name, field in cls.model_fields.items():
            env = (_prefix(cls) + name).upper()
            flag = VLLM_FLAGS.get(env) or "--" + env.removeprefix("BIOINSTRUCT_").lower().replace("_", "-")
            kind, decode_json = _kind(field.annotation)
            if any(m is NoDecode or isinstance(m, NoDecode) for m in field.metadata):
                decode_json = False  # its own validator reads comma-separated text
            param = "s_" + env.removeprefix("BIOINSTRUCT_").lower()
            options.append(SettingOption(cls, name, env, flag, param, kind, decode_json, panel))
    for attr in ("env", "flag", "param"):
        seen = [getattr(o, attr) for o in options]
        dupes = {v for v in seen if seen.count(v) > 1}
        if dupes:
            raise RuntimeError(f"two settings share {attr} {sorted(dupes)}: rename one")
    return options


def _shown(value: Any) -> str:
    if value is None or isinstance(value, SecretStr):
        return "unset"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list | dict):
        return json.dumps(value)
    if isinstance(value, Path) and value == CoreSettings.model_fields["home"].default:
        return "the checkout, or the current folder"
    return str(value)


def option_help(option: SettingOption, environ: Mapping[str, str] | None = None) -> str:
    field = option.cls.model_fields[option.field]
    default = field.default_factory() if field.default_factory else field.default  # type: ignore[call-arg]
    text = field.description or HELP.get(option.env, "")
    text = f"{text} " if text else ""
    now = (environ if environ is not None else os.environ).get(option.env)
    if now is not None:
        secret = field.annotation is not None and "SecretStr" in str(field.annotation) or "KEY" in option.env
        now_text = "set" if secret else repr(now)
        return f"{text}({option.env}, default {_shown(default)}; now {now_text} from the environment)"
    return f"{text}({option.env}, default {_shown(default)})"


def env_overrides(options: Iterable[SettingOption], values: Mapping[str, Any]) -> dict[str, str]:
    """The flags given, as the environment variables they stand for, valued as the environment
    writes them."""
    out: dict[str, str] = {}
    for option in options:
        value = values.get(option.param)
        if value is None or (option.kind == "many" and not value):
            continue
        if option.kind == "bool":
            out[option.env] = "true" if value else "false"
        elif option.kind == "many":
            items = [str(v) for v in value]
            if len(items) == 1 and items[0].lstrip()[:1] in ("[", "{"):
                out[option.env] = items[0]  # given as JSON, as the variable takes it
            elif option.decode_json:
                out[option.env] = json.dumps(items)
            else:
                out[option.env] = ",".join(items)
        else:
            out[option.env] = str(value)
    return out


def build_settings(options: list[SettingOption], overrides: Mapping[str, str],
                   classes: Iterable[type[BaseSettings]]) -> dict[type[BaseSettings], BaseSettings]:
    """Each class from the environment with the flags laid over it; SettingsInputError naming the
    flag (or the variable, when the bad value came from there) and what the setting takes."""
    built: dict[type[BaseSettings], BaseSettings] = {}
    with mock.patch.dict(os.environ, dict(overrides)):
        for cls in classes:
            try:
                built[cls] = cls()
            except ValidationError as exc:
                raise SettingsInputError(_explain(options, cls, exc, overrides)) from None
            except (SettingsError, ValueError) as exc:
                raise SettingsInputError(_explain_text(options, cls, str(exc), overrides)) from None
    return built


def _source(option: SettingOption, overrides: Mapping[str, str]) -> str:
    return option.label if option.env in overrides else f"{option.env} (environment)"


def _explain(options: list[SettingOption], cls: type[BaseSettings], exc: ValidationError,
             overrides: Mapping[str, str]) -> str:
    by_field = {o.field: o for o in options if o.cls is cls}
    lines = []
    for error in exc.errors():
        name = str(error["loc"][0]) if error["loc"] else ""
        option = by_field.get(name)
        where = _source(option, overrides) if option else (name or cls.__name__)
        given = error.get("input")
        given_text = "" if option and "KEY" in option.env or "TOKEN" in (option.env if option else "") \
            else f" (given {given!r})"
        message = str(error["msg"]).removeprefix("Value error, ")
        lines.append(f"{where}: {message}{given_text}")
    return "; ".join(lines)


def _explain_text(options: list[SettingOption], cls: type[BaseSettings], text: str,
                  overrides: Mapping[str, str]) -> str:
    for option in options:
        if option.cls is cls and f'"{option.field}"' in text:
            return f"{_source(option, overrides)}: not a valid value ({text.splitlines()[0]}); " \
                   "a list or mapping is given as JSON, or by repeating the option"
    return f"{cls.__name__}: {text.splitlines()[0]}"


@dataclass
class ServeConfig:
    """What `bioinstruct serve` builds the gateway from."""

    core: CoreSettings
    service: ServiceSettings
    engine: EngineSettings
    observability: ObservabilitySettings
    overrides: dict[str, str]


def serve_config(values: Mapping[str, Any], options: list[SettingOption] | None = None) -> ServeConfig:
    """The settings the gateway is built with: environment, then flags. Pure (the environment is
    read, not changed). Raises SettingsInputError."""
    options = options if options is not None else setting_options(SERVE_CLASSES)
    overrides = env_overrides(options, values)
    built = build_settings(options, overrides, [cls for cls, _ in SERVE_CLASSES])
    return ServeConfig(
        core=built[CoreSettings], service=built[ServiceSettings],  # type: ignore[arg-type]
        engine=built[EngineSettings], observability=built[ObservabilitySettings],  # type: ignore[arg-type]
        overrides=overrides)


def export(overrides: Mapping[str, str]) -> None:
    """The flags into this process's environment, for every part that reads settings by itself
    (cached settings, the shipped adapters' root, the engine it starts)."""
    os.environ.update(overrides)
    core_settings.cache_clear()
    from bioinstruct.service.observability import observability_settings
    from bioinstruct.service.settings import service_settings

    observability_settings.cache_clear()
    service_settings.cache_clear()


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg="red", err=True)
    return typer.Exit(2)


def require(modules: Iterable[str], what: str) -> None:
    """Exit 2 naming the extra to install when the light install (no engine, no gateway) runs `what`."""
    missing = [m for m in modules if importlib.util.find_spec(m) is None]
    if missing:
        raise _fail(f"{what} needs {', '.join(missing)}, which this installation lacks: "
                    "pip install 'bioinstruct[cpu]' (or [gpu]; [serve] alone for a gateway in front of "
                    "an engine that runs elsewhere, --engine-url)")


def base_model_or_exit(core: CoreSettings) -> BaseModelInfo:
    """The base model, fetched first when it is a Hub id; a clear exit 2 when it cannot be used."""
    try:
        return ensure_base_model(core, log=lambda line: typer.echo(line, err=True))
    except BaseModelError as exc:
        raise _fail(str(exc)) from None


def _with_setting_options(fn: Callable[..., None], options: list[SettingOption]) -> Callable[..., None]:
    """`fn` with one typer option per setting added to its own parameters."""
    own = list(inspect.signature(fn).parameters.values())
    hints = typing.get_type_hints(fn)
    params = [p.replace(annotation=hints.get(p.name, p.annotation)) for p in own if p.kind != p.VAR_KEYWORD]
    for option in options:
        if option.kind == "bool":
            name = option.flag.removeprefix("--")
            default = typer.Option(None, f"--{name}/--no-{name}", show_default=False,
                                   rich_help_panel=option.panel)
            annotation: Any = bool | None
        else:
            default = typer.Option(None, option.flag, show_default=False, rich_help_panel=option.panel,
                                   metavar="TEXT" if option.kind == "one" else "TEXT ...")
            annotation = list[str] | None if option.kind == "many" else str | None
        default.help = option_help(option)
        params.append(inspect.Parameter(option.param, inspect.Parameter.KEYWORD_ONLY, default=default,
                                        annotation=annotation))

    def command(**values: Any) -> None:
        fn(**values)

    command.__name__, command.__doc__ = fn.__name__, fn.__doc__
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    return command


def register(app: typer.Typer) -> None:
    serve_options = setting_options(SERVE_CLASSES)
    engine_options = setting_options(ENGINE_CLASSES)

    def serve(
        log_level: str = typer.Option("info", help="uvicorn's log level: critical, error, warning, info "
                                                   "or debug."),
        **values: Any,
    ) -> None:
        """Start the gateway and its vLLM engine; Ctrl-C or SIGTERM stops both.

        Every setting below is read from its BIOINSTRUCT_ variable and can be given as an option
        instead (the option wins). Options named as vLLM's mean what vLLM's do."""
        try:
            config = serve_config(values, serve_options)
        except SettingsInputError as exc:
            raise _fail(str(exc)) from None
        export(config.overrides)
        start_gateway(config, log_level)

    def engine(**values: Any) -> None:
        """Run the bare vLLM engine with the project's settings (debugging).

        Every setting below is read from its BIOINSTRUCT_ variable and can be given as an option."""
        from bioinstruct.service.engine import EngineProcess

        overrides = env_overrides(engine_options, values)
        try:
            built = build_settings(engine_options, overrides, [CoreSettings, EngineSettings])
        except SettingsInputError as exc:
            raise _fail(str(exc)) from None
        export(overrides)
        require(["vllm"], "bioinstruct engine")
        info = base_model_or_exit(built[CoreSettings])  # type: ignore[arg-type]
        proc = EngineProcess(Path(info.path), built[EngineSettings])  # type: ignore[arg-type]
        proc.start()
        typer.echo(f"engine at {proc.base_url}, log {proc.log_path}")
        try:
            proc.wait_healthy()
            typer.echo("healthy")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            proc.stop()

    app.command("serve")(_with_setting_options(serve, serve_options))
    app.command("engine")(_with_setting_options(engine, engine_options))


def start_gateway(config: ServeConfig, log_level: str) -> None:
    """Check the base model, build the app from `config`, run it until a signal."""
    settings, core = config.service, config.core
    require(["fastapi", "uvicorn", "prometheus_client", "transformers", "huggingface_hub"]
            + (["vllm"] if settings.engine_url is None else []), "bioinstruct serve")
    from bioinstruct.service.app import create_app
    from bioinstruct.service.engine import die_with_parent
    from bioinstruct.service.observability import ObservabilityError, configure_logging

    # The gateway reads the model's tokenizer and fingerprint even when someone else runs the engine.
    base = base_model_or_exit(core)
    die_with_parent()  # if `make` (our parent) is killed, stop too: no orphan engine
    try:
        # Text or JSON (BIOINSTRUCT_LOG_FORMAT), request id on every line, uvicorn's too.
        log_config = configure_logging(log_level)
        gateway_app = create_app(settings, core=core, engine_settings=config.engine,
                                 observability=config.observability)
    except ObservabilityError as exc:  # a bad log format; tracing on without the otel extra
        raise _fail(str(exc)) from None
    _publish_shipped(settings, core, config.engine, base)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    typer.echo(f"BioInstruct gateway on http://{settings.host}:{settings.port} "
               f"(base model {base.path}; engine starting, see /health/ready)")
    run_server(gateway_app, settings, log_level, log_config)


def run_server(gateway_app: Any, settings: ServiceSettings, log_level: str, log_config: Any) -> None:
    import uvicorn

    # uvicorn drains and shuts down on SIGINT/SIGTERM, then re-raises the signal to the
    # handler that was there before it: make that one a clean exit (status 0).
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: sys.exit(0))
    uvicorn.run(gateway_app, host=settings.host, port=settings.port, log_level=log_level,
                log_config=log_config, timeout_graceful_shutdown=int(settings.shutdown_grace_s))


def _publish_shipped(settings: ServiceSettings, core: CoreSettings, engine: EngineSettings,
                     base: BaseModelInfo) -> None:
    """The adapters in adapters/ into the registry (idempotent); never stops the service from starting."""
    from bioinstruct.publishing import PublishTarget
    from bioinstruct.registry import RegistryError, open_registry
    from bioinstruct.shipped import ShippedError, default_root, publish_shipped

    log = logging.getLogger("bioinstruct.shipped")
    value = settings.shipped_adapters
    if value is not None and value.strip().lower() in ("", "off", "none"):
        return
    root = Path(value) if value else default_root()
    if not root.is_dir():
        log.info("no shipped adapters at %s", root)
        return
    try:
        registry = open_registry(core=core)
        publish_shipped(registry, PublishTarget.of(base, engine), root=root, say=log.info)
    except (RegistryError, ShippedError, OSError) as exc:
        log.error("shipped adapters not published (the service starts without them): %s", exc)
