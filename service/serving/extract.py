"""/extract: entities (and relations) whose offsets match the input text; mentions not found in
it are dropped and counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.parsing import Entity, parse_entities, parse_relations
from bioinstruct.instruct.prompts import entity_asks, entity_task, relation_task
from bioinstruct.service.auth import Caller
from bioinstruct.service.protocol import (
    EntityOut,
    ExtractRequest,
    ExtractResponse,
    RelationOut,
    Usage,
)
from bioinstruct.service.serving.base import Serving


class ExtractServing(Serving):
    route = "extract"

    async def serve(self, req: ExtractRequest, caller: Caller, state: Any = None) -> ExtractResponse:
        started = time.perf_counter()
        asks = entity_asks(req.entity_types, req.type_strategy or self.settings.extract_type_strategy)
        prompts = [self.prompt(TaskFamily.IE, *entity_task(req.text, types), req.max_tokens, 384) for types in asks]
        if req.relations:
            prompts.append(self.prompt(TaskFamily.IE, *relation_task(req.text, req.relation_types),
                                       req.max_tokens, 256))
        async with self.gateway.serving(req.adapter, TaskFamily.IE, self.settings.extract_adapter, caller,
                                        state) as target:
            outs = await asyncio.gather(*(self.gateway.complete(target, p.ids, max_tokens=p.max_tokens)
                                          for p in prompts))
        usage = Usage()
        for out in outs:
            usage.add(out.get("usage"))
        raws = [out["choices"][0]["text"] for out in outs]
        entities, dropped = _entities(raws[:len(asks)], asks, req)
        raw = "\n---\n".join(raws[:len(asks)])
        relations = None
        if req.relations:
            relations, rel_dropped = _relations(raws[-1], req, entities)
            dropped += rel_dropped
            raw = raw + "\n---\n" + raws[-1]
        return ExtractResponse(
            entities=[EntityOut(text=e.text, type=e.type, start=e.start, end=e.end) for e in entities],
            relations=relations, dropped=dropped, raw_text=raw, **self.finish(target, usage, started),
        )


def _entities(raws: list[str], asks: list[tuple[str, ...]], req: ExtractRequest) -> tuple[list[Entity], int]:
    """The requested types' mentions from every ask, in the caller's spelling of each type. A
    span the adapter gave an unrequested type (asked only under the "full" strategy) is not
    returned under a requested one: a gene is not a chemical because chemicals were asked for."""
    spelling = {t.casefold(): t for t in req.entity_types}
    found: dict[tuple[int, int, str], Entity] = {}
    vetoed: set[tuple[int, int]] = set()
    dropped = 0
    for raw, types in zip(raws, asks, strict=True):
        ents, lost = parse_entities(raw, req.text, types)
        dropped += lost
        for e in ents:
            if (name := spelling.get(e.type.casefold())) is None:
                vetoed.add((e.start, e.end))
            else:
                found.setdefault((e.start, e.end, name), Entity(e.text, name, e.start, e.end))
    kept = [e for (start, end, _), e in found.items() if (start, end) not in vetoed]
    return sorted(kept, key=lambda e: (e.start, e.end, e.type)), dropped


def _relations(raw: str, req: ExtractRequest, entities: list[Entity]) -> tuple[list[RelationOut], int]:
    """Relations whose both ends are found in the text, typed by the entity found at that span."""
    rels, dropped = parse_relations(raw, req.text, req.relation_types)
    types = {(e.start, e.end): e.type for e in entities}

    def end(text: str, start: int, stop: int) -> EntityOut:
        return EntityOut(text=text, type=types.get((start, stop), "Entity"), start=start, end=stop)

    return [RelationOut(head=end(r.head, r.head_start, r.head_end), type=r.type,
                        tail=end(r.tail, r.tail_start, r.tail_end)) for r in rels], dropped
