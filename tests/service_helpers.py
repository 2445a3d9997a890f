"""Helpers for service tests: publish adapters into a live gateway's registry, run extra gateways."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import httpx
import uvicorn

from bioinstruct.service.app import create_app
from bioinstruct.service.engine import free_port
from bioinstruct.service.settings import ServiceSettings
from tests.server_process import wait_ready


def publish(live, folder: Path, name: str, category: str = "QA", alias: str | None = None) -> dict:
    """Copy a LoRA folder under the publish root and publish it through the admin API."""
    dest = live.publish_root / f"{name}-{folder.name}-{time.monotonic_ns()}"
    shutil.copytree(folder, dest)
    body = {"path": dest.name, "name": name, "category": category}
    if alias:
        body["alias"] = alias
    r = httpx.post(f"{live.base_url}/admin/adapters", json=body, headers=live.admin_headers, timeout=120)
    assert r.status_code == 201, r.text
    return r.json()


def set_alias(live, alias: str, target: str) -> httpx.Response:
    return httpx.put(f"{live.base_url}/admin/aliases/{alias}", json={"target": target},
                     headers=live.admin_headers, timeout=120)


class ExtraGateway:
    """A second gateway (other settings) in front of the same session engine."""

    def __init__(self, engine, core, registry: Path, **settings) -> None:
        self.settings = ServiceSettings(**settings)
        self.app = create_app(self.settings, core=core.model_copy(update={"registry": str(registry)}),
                              engine_settings=engine.settings, engine_process=engine)
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.base_url = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ExtraGateway:
        self.thread.start()
        wait_ready(self.base_url, 120, interval=0.2)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)
        if self.thread.is_alive():  # connections still open: stop without waiting for them
            self.server.force_exit = True
            self.thread.join(timeout=30)
        # A gateway left running would keep watching (and restarting) the shared engine.
        assert not self.thread.is_alive(), "extra gateway did not stop"
