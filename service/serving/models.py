"""The models a caller may name: the base model, the aliases being served, and every version in
the registry. /v1/models lists them; the read-only views of which version serves an alias, what
is loaded and what is in use are here too, so routes never reach into the adapter manager."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bioinstruct.service.auth import Caller
from bioinstruct.service.openai_protocol import ModelCard, ModelList

if TYPE_CHECKING:
    from bioinstruct.service.gateway import Gateway


class ServingModels:
    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.adapters = gateway.adapters
        self.base_name = gateway.engine_settings.served_name

    async def list(self, caller: Caller) -> ModelList:
        """Base, aliases (with the version each serves) and registry versions this caller may use."""
        created = int(self.gateway.started_at)
        base = self.base_name
        # The model's folder name, not its path on this machine (unauthenticated callers see it).
        cards = [ModelCard(id=base, created=created, root=Path(self.gateway.base.path).name)]
        for alias, ref in sorted(self.adapters.routes.items()):
            cards.append(ModelCard(id=alias, created=created, parent=base, target=ref))
        for m in await asyncio.to_thread(self.gateway.registry.manifests):
            cards.append(ModelCard(id=m.ref, created=created, parent=base, category=m.category))
        if caller.allowed is not None and "*" not in caller.allowed:
            allowed = set(caller.allowed)
            cards = [c for c in cards if c.id == base and "base" in allowed or c.id in allowed
                     or c.id.split("@")[0] in allowed or (c.target and c.id in allowed)]
        return ModelList(data=cards)

    # ---- read-only views for the admin routes ---------------------------------------------
    def serving(self, alias: str) -> str | None:
        """The version this replica serves the alias from (None: not serving here)."""
        return self.adapters.routes.get(alias)

    def split(self, alias: str) -> dict[str, int]:
        return dict(self.adapters.splits.get(alias, ()))

    def alias_error(self, alias: str) -> str | None:
        return self.adapters.alias_errors.get(alias)

    def is_loaded(self, ref: str) -> bool:
        return ref in self.adapters.loaded

    def in_use(self, ref: str) -> int:
        """Requests holding a lease on this version now."""
        return self.adapters.inflight.get(ref, 0)

    def recent_swaps(self, limit: int = 20) -> list[dict[str, Any]]:
        return [vars(e) for e in list(self.adapters.events)[-limit:]]
