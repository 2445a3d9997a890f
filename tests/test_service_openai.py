"""The official openai client works against the gateway unchanged, exceptions included."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.service_helpers import ExtraGateway

pytestmark = pytest.mark.engine


@pytest.fixture(scope="module")
def client(live_service):
    return openai.OpenAI(base_url=f"{live_service.base_url}/v1", api_key="unused", max_retries=0, timeout=120)


def test_models_list(client):
    models = client.models.list().data
    assert models[0].id == "base"
    assert not models[0].root.startswith("/")  # the model's name, not this machine's path


def test_chat_completion(client):
    out = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "What does the liver do?"}], max_tokens=16, temperature=0)
    assert out.choices[0].message.content.strip()
    assert out.usage.completion_tokens <= 16
    assert out.model == "base"


def test_completion(client):
    out = client.completions.create(model="base", prompt="Aspirin is used to", max_tokens=8, temperature=0)
    assert out.choices[0].text.strip()


def test_streaming_chat_and_completion(client):
    stream = client.chat.completions.create(
        model="base", messages=[{"role": "user", "content": "Name two vitamins."}], max_tokens=12,
        temperature=0, stream=True)
    pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
    assert len(pieces) > 2 and "".join(pieces).strip()
    stream = client.completions.create(model="base", prompt="The heart pumps", max_tokens=8, stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices).strip()


def test_async_client_concurrent(live_service):
    async def run():
        aclient = openai.AsyncOpenAI(base_url=f"{live_service.base_url}/v1", api_key="x", max_retries=0)
        outs = await asyncio.gather(*[
            aclient.completions.create(model="base", prompt=f"Fact {i}:", max_tokens=4) for i in range(8)])
        await aclient.close()
        return outs

    outs = asyncio.run(run())
    assert len(outs) == 8 and all(o.choices for o in outs)


def test_client_exceptions_400_404(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="no-such", messages=[{"role": "user", "content": "x"}])
    assert "unknown adapter" in info.value.message
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="base", messages=[{"role": "user", "content": "x"}], max_tokens=10**7)


def test_seeded_requests_prefilled_in_chunks_are_served_and_repeatable(client, live_service):
    """A seeded request with a long prompt (prefilled in chunks) used to kill vLLM-CPU's engine
    ("CPU Generator does not use offset"); our vLLM plugin fixes it. The same seed gives the same
    text alone and beside other requests, i.e. independent of how the prompt was chunked."""
    long_prompt = "Summarize: " + "The patient was given aspirin and recovered. " * 400

    def seeded():
        return client.completions.create(model="base", prompt=long_prompt, max_tokens=12, temperature=1.0, seed=7)

    alone = seeded().choices[0].text

    async def crowded():
        aclient = openai.AsyncOpenAI(base_url=f"{live_service.base_url}/v1", api_key="x", max_retries=0)
        others = [aclient.completions.create(model="base", prompt=long_prompt + str(i), max_tokens=4) for i in range(3)]
        mine = aclient.completions.create(model="base", prompt=long_prompt, max_tokens=12, temperature=1.0, seed=7)
        results = await asyncio.gather(mine, *others)
        await aclient.close()
        return results

    results = asyncio.run(crowded())
    assert results[0].choices[0].text == alone
    other_seed = client.completions.create(model="base", prompt=long_prompt, max_tokens=12, temperature=1.0, seed=8)
    assert other_seed.choices[0].text != alone  # the seed is honoured, not ignored
    assert client.completions.create(model="base", prompt="Aspirin is", max_tokens=4, temperature=0).choices[0].text


def test_client_exceptions_401_403_429(engine, core, tmp_path, make_lora):
    from bioinstruct.model import inspect_base_model
    from bioinstruct.registry import Registry

    info = inspect_base_model(engine.model_dir)
    Registry(tmp_path / "reg").publish(make_lora(seed=21), name="xg-qa", category="QA",
                                       base_fingerprint=info.fingerprint, alias="qa")
    keys = {"full-key": ["*"], "base-only": ["base"]}
    with ExtraGateway(engine, core, tmp_path / "reg", api_keys=keys, max_inflight=1, max_queue=0,
                      admin_token="adm") as gw:
        url = f"{gw.base_url}/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=url, api_key="wrong", max_retries=0).models.list()
        limited = openai.OpenAI(base_url=url, api_key="base-only", max_retries=0)
        assert [m.id for m in limited.models.list()] == ["base"]
        with pytest.raises(openai.PermissionDeniedError):
            limited.completions.create(model="qa", prompt="x", max_tokens=2)
        with pytest.raises(openai.NotFoundError):
            limited.completions.create(model="no-such", prompt="x", max_tokens=2)
        ok = openai.OpenAI(base_url=url, api_key="full-key", max_retries=0)
        assert ok.completions.create(model="base", prompt="x", max_tokens=2).choices
        assert ok.completions.create(model="qa", prompt="x", max_tokens=2).model == "xg-qa@1"

        async def burst():
            aclient = openai.AsyncOpenAI(base_url=url, api_key="full-key", max_retries=0)
            results = await asyncio.gather(*[
                aclient.completions.create(model="base", prompt="Count:", max_tokens=24) for _ in range(6)],
                return_exceptions=True)
            await aclient.close()
            return results

        results = asyncio.run(burst())
        limited_out = [r for r in results if isinstance(r, openai.RateLimitError)]
        assert limited_out, results
        assert all(r.response.headers.get("retry-after") for r in limited_out)
        assert any(not isinstance(r, Exception) for r in results)


def test_prompt_logprobs_as_lm_eval_sends_them_for_base_aliases_and_pins(client, live_service, make_lora, tokenizer):
    """lm-evaluation-harness scores choices with {"prompt": [token ids], "max_tokens": 1,
    "logprobs": 1, "echo": true, "temperature": 0, "seed": 1234}; base, an alias and a pinned
    version must all answer it, and in a mixed batch each must get its own adapter's numbers."""
    from tests.service_helpers import publish

    ref = publish(live_service, make_lora(seed=61), "pl-qa", "QA", alias="plqa")["ref"]
    ids = tokenizer("Question: Which organ produces insulin?\nAnswer: the pancreas",
                    add_special_tokens=False)["input_ids"]
    body = {"prompt": ids, "max_tokens": 1, "logprobs": 1, "echo": True, "temperature": 0, "seed": 1234}

    def score(model):
        out = client.completions.create(model=model, **body)
        lp = out.choices[0].logprobs
        assert len(lp.token_logprobs) == len(ids) + 1 and lp.token_logprobs[0] is None
        assert all(x <= 0 for x in lp.token_logprobs[1:]) and len(lp.top_logprobs) == len(ids) + 1
        return lp.token_logprobs[1:len(ids)]

    alone = {m: score(m) for m in ("base", "plqa", ref)}
    assert alone["plqa"] == pytest.approx(alone[ref], abs=1e-4)
    assert max(abs(a - b) for a, b in zip(alone["base"], alone["plqa"], strict=True)) > 1e-2  # the adapter is applied

    async def mixed():
        aclient = openai.AsyncOpenAI(base_url=f"{live_service.base_url}/v1", api_key="x", max_retries=0)
        results = await asyncio.gather(*[aclient.completions.create(model=m, **body) for m in ("base", "plqa") * 3])
        await aclient.close()
        return results

    for model, out in zip(("base", "plqa") * 3, asyncio.run(mixed()), strict=True):
        assert out.choices[0].logprobs.token_logprobs[1:len(ids)] == pytest.approx(alone[model], abs=1e-3), model
