"""The baseline a user would write instead of us: transformers + peft behind a small FastAPI
server, one request at a time, adapters switched with `set_adapter` per request.

    python -m bioinstruct.bench.hf_server --port 8100 --adapter a1=/path/to/lora --adapter a2=/path/...

It answers the subset of OpenAI's POST /v1/completions the benchmark sends (model, prompt,
max_tokens, min_tokens; greedy; min_new_tokens = max_new_tokens when min_tokens is given),
with the same response shape (choices[0].text, usage, model). `model` is an adapter name,
or "base" (adapters disabled).
"""

from __future__ import annotations

import argparse
import asyncio
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str
    prompt: str
    max_tokens: int = 16
    min_tokens: int | None = None


def build_app(base_dir: Path, adapters: dict[str, Path], threads: int) -> FastAPI:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.set_num_threads(threads)
    tokenizer = AutoTokenizer.from_pretrained(base_dir)
    model = AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32)
    if adapters:
        from peft import PeftModel

        items = list(adapters.items())
        model = PeftModel.from_pretrained(model, items[0][1], adapter_name=items[0][0])
        for name, folder in items[1:]:
            model.load_adapter(folder, adapter_name=name)
    model.eval()
    lock = threading.Lock()
    app = FastAPI(title="transformers+peft baseline")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id

    def generate(req: CompletionRequest) -> dict[str, Any]:
        with lock:  # one request at a time: what a plain generate() server does
            enc = tokenizer(req.prompt, return_tensors="pt")
            kwargs = dict(max_new_tokens=req.max_tokens, do_sample=False, pad_token_id=pad_id)
            if req.min_tokens:
                kwargs["min_new_tokens"] = req.min_tokens
            with torch.inference_mode():
                if adapters and req.model != "base":
                    model.set_adapter(req.model)
                    out = model.generate(**enc, **kwargs)
                elif adapters:
                    with model.disable_adapter():
                        out = model.generate(**enc, **kwargs)
                else:
                    out = model.generate(**enc, **kwargs)
            new = out[0, enc["input_ids"].shape[1]:]
            return {
                "id": f"cmpl-{time.monotonic_ns()}", "object": "text_completion", "created": int(time.time()),
                "model": req.model,
                "choices": [{"index": 0, "text": tokenizer.decode(new, skip_special_tokens=True),
                             "finish_reason": "length"}],
                "usage": {"prompt_tokens": int(enc["input_ids"].shape[1]), "completion_tokens": int(new.shape[0]),
                          "total_tokens": int(out.shape[1])},
            }

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/completions")
    async def completions(req: CompletionRequest):
        if req.model != "base" and req.model not in adapters:
            return JSONResponse({"error": {"message": f"unknown model {req.model!r}"}}, status_code=404)
        return await asyncio.to_thread(generate, req)

    return app


def main(argv: list[str] | None = None) -> None:
    from bioinstruct.settings import CoreSettings, apply_offline_env

    apply_offline_env()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--adapter", action="append", default=[], help="NAME=FOLDER (repeatable)")
    parser.add_argument("--base-model", type=Path, default=None)
    args = parser.parse_args(argv)
    adapters = {}
    for spec in args.adapter:
        name, _, folder = spec.partition("=")
        adapters[name] = Path(folder)
    import uvicorn

    app = build_app(args.base_model or CoreSettings().base_model_dir, adapters, args.threads)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main()
