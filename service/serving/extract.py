"""/extract: entities (and relations) whose offsets match the input text; mentions not found in
it are dropped and counted."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bioinstruct.instruct.families import TaskFamily
from bioinstruct.instruct.parsing import Entity, parse_entities, parse_relations
from bioinstruct.instruct.prompts import entity_task, relation_task
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
        prompts = [self.prompt(TaskFamily.IE, *entity_task(req.text, req.entity_types), req.max_tokens, 384)]
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
        raw = outs[0]["choices"][0]["text"]
        entities, dropped = parse_entities(raw, req.text, req.entity_types)
        relations = None
        if req.relations:
            raw_rel = outs[1]["choices"][0]["text"]
            relations, rel_dropped = _relations(raw_rel, req, entities)
            dropped += rel_dropped
            raw = raw + "\n---\n" + raw_rel
        return ExtractResponse(
            entities=[EntityOut(text=e.text, type=e.type, start=e.start, end=e.end) for e in entities],
            relations=relations, dropped=dropped, raw_text=raw, **self.finish(target, usage, started),
        )


def _relations(raw: str, req: ExtractRequest, entities: list[Entity]) -> tuple[list[RelationOut], int]:
    """Relations whose both ends are found in the text, typed by the entity found at that span."""
    rels, dropped = parse_relations(raw, req.text, req.relation_types)
    types = {(e.start, e.end): e.type for e in entities}

    def end(text: str, start: int, stop: int) -> EntityOut:
        return EntityOut(text=text, type=types.get((start, stop), "Entity"), start=start, end=stop)

    return [RelationOut(head=end(r.head, r.head_start, r.head_end), type=r.type,
                        tail=end(r.tail, r.tail_start, r.tail_end)) for r in rels], dropped
