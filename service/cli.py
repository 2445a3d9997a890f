"""`bioinstruct serve` and `bioinstruct engine`."""

from __future__ import annotations

import logging
import signal
import sys
from pathlib import Path

import typer

from bioinstruct.model import BaseModelError, inspect_base_model
from bioinstruct.settings import core_settings


def register(app: typer.Typer) -> None:
    @app.command("serve")
    def serve(
        host: str = typer.Option(None, help="Bind address (default BIOINSTRUCT_HOST or 127.0.0.1)"),
        port: int = typer.Option(None, help="Port (default BIOINSTRUCT_PORT or 8000)"),
        log_level: str = typer.Option("info"),
    ) -> None:
        """Start the gateway and its vLLM engine; Ctrl-C or SIGTERM stops both."""
        import uvicorn
        from bioinstruct.service.app import create_app
        from bioinstruct.service.engine import die_with_parent
        from bioinstruct.service.settings import ServiceSettings

        settings = ServiceSettings()
        if host:
            settings.host = host
        if port:
            settings.port = port
        core = core_settings()
        if settings.engine_url is None:
            try:
                inspect_base_model(core.base_model_dir)
            except BaseModelError as exc:
                typer.secho(f"error: {exc}", fg="red", err=True)
                raise typer.Exit(2) from exc
        die_with_parent()  # if `make` (our parent) is killed, stop too: no orphan engine
        from bioinstruct.service.observability import ObservabilityError, configure_logging

        try:
            # Text or JSON (BIOINSTRUCT_LOG_FORMAT), request id on every line, uvicorn's too.
            log_config = configure_logging(log_level)
            gateway_app = create_app(settings, core=core)
        except ObservabilityError as exc:  # a bad log format; tracing on without the otel extra
            typer.secho(f"error: {exc}", fg="red", err=True)
            raise typer.Exit(2) from exc
        _publish_shipped(settings, core)
        logging.getLogger("httpx").setLevel(logging.WARNING)
        typer.echo(f"BioInstruct gateway on http://{settings.host}:{settings.port} "
                   f"(base model {core.base_model_dir}; engine starting, see /health/ready)")
        # uvicorn drains and shuts down on SIGINT/SIGTERM, then re-raises the signal to the
        # handler that was there before it: make that one a clean exit (status 0).
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: sys.exit(0))
        uvicorn.run(gateway_app, host=settings.host, port=settings.port, log_level=log_level,
                    log_config=log_config, timeout_graceful_shutdown=int(settings.shutdown_grace_s))

    @app.command("engine")
    def engine() -> None:
        """Run the bare vLLM engine with the project's settings (debugging)."""
        from bioinstruct.service.engine import EngineProcess, EngineSettings

        proc = EngineProcess(core_settings().base_model_dir, EngineSettings())
        proc.start()
        typer.echo(f"engine at {proc.base_url}, log {proc.log_path}")
        try:
            proc.wait_healthy()
            typer.echo("healthy")
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        finally:
            proc.stop()


def _publish_shipped(settings, core) -> None:
    """The adapters in adapters/ into the registry (idempotent); never stops the service from starting."""
    from bioinstruct.service.engine import EngineSettings

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
        base = inspect_base_model(core.base_model_dir)
        registry = open_registry(core=core)
        publish_shipped(registry, base.fingerprint, EngineSettings().adapter_limits(base.hidden_size),
                        root=root, say=log.info)
    except (BaseModelError, RegistryError, ShippedError, OSError) as exc:
        log.error("shipped adapters not published (the service starts without them): %s", exc)
