"""The OpenAPI schema describes what the server accepts, /v1 bodies included (they are relayed
to vLLM as JSON, not parsed into models, so their schema is written out)."""

from __future__ import annotations

from bioinstruct.service.app import create_app
from bioinstruct.service.routes.openai_compat import MAX_LOGPROBS, MAX_N
from bioinstruct.service.settings import ServiceSettings


def test_v1_request_bodies_are_in_the_schema_with_this_servers_limits():
    schema = create_app(ServiceSettings(max_tokens_limit=321)).openapi()
    completions = schema["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    chat = schema["paths"]["/v1/chat/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert completions["required"] == ["model", "prompt"] and chat["required"] == ["model", "messages"]
    for body in (completions, chat):
        props = body["properties"]
        assert props["max_tokens"]["maximum"] == 321  # the setting, not a constant
        assert props["n"]["maximum"] == MAX_N
        assert props["model"]["minLength"] == 1
    assert completions["properties"]["logprobs"]["maximum"] == MAX_LOGPROBS
    assert chat["properties"]["max_completion_tokens"]["maximum"] == 321
    # the task routes keep their pydantic schemas
    assert "requestBody" in schema["paths"]["/qa"]["post"]


def test_a_wrong_method_gets_405_with_every_method_the_path_allows():
    """Starlette's Allow named only the first matching route's methods (GET /admin/adapters
    answered 'Allow: GET' though POST is served there too)."""
    from fastapi.testclient import TestClient

    app = create_app(ServiceSettings())
    client = TestClient(app)  # no lifespan: routing and error handling only
    expected = {"/admin/adapters": "GET, POST", "/admin/aliases/qa": "DELETE, GET, PUT", "/qa": "POST",
                "/v1/completions": "POST", "/metrics": "GET"}
    for path, allow in expected.items():
        for method in ("OPTIONS", "PATCH"):
            r = client.request(method, path)
            assert r.status_code == 405 and r.headers["allow"] == allow, (method, path, r.headers.get("allow"))
            assert allow in r.json()["error"]["message"]


def test_what_schemathesis_found_schema_valid_but_refused():
    """Each of these was schema-valid and answered 400 (schemathesis --checks all, ST202)."""
    from bioinstruct.service.protocol import PublishRequest, QARequest

    schema = create_app(ServiceSettings(max_tokens_limit=100)).openapi()
    comps = schema["components"]["schemas"]
    # duplicate options: the schema now says uniqueItems, and the server compares exactly
    assert comps["QARequest"]["properties"]["options"]["uniqueItems"] is True
    assert QARequest.model_validate_json('{"question": "q", "options": ["Yes", "yes"]}').options == ["Yes", "yes"]
    # 5.0 is an integer to JSON Schema
    assert QARequest.model_validate_json('{"question": "q", "max_tokens": 5.0}').max_tokens == 5
    for name in ("QARequest", "ExtractRequest", "GenerateRequest"):
        assert comps[name]["properties"]["max_tokens"]["anyOf"][0]["maximum"] == 100
    # the publish path: relative, no '..' (the schema's pattern is the rule)
    pattern = comps["PublishRequest"]["properties"]["path"]["pattern"]
    import re

    for path, ok in (("runs/x/adapter", True), ("", False), ("/etc", False), ("~/x", False), ("a/../b", False)):
        assert bool(re.match(pattern, path)) is ok, path  # the route's own checks: test_reliability.py
    assert PublishRequest(path="runs/x", name="x", category="QA").path == "runs/x"
    # alias and adapter names in paths carry the registry's pattern
    params = schema["paths"]["/admin/aliases/{alias}"]["put"]["parameters"]
    assert params[0]["schema"]["pattern"].startswith("^[a-z0-9]")


def test_compare_schema_says_which_body_each_route_takes():
    """/compare's `request` was a free object: a route's wrong body ({"route": "qa", "request":
    {"instruction": ...}}) was schema-valid and refused (schemathesis). Now a oneOf on `route`."""
    from fastapi.testclient import TestClient

    app = create_app(ServiceSettings(max_tokens_limit=100))
    schema = app.openapi()
    body = schema["paths"]["/compare"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    mapping = body["discriminator"]["mapping"]
    assert body["discriminator"]["propertyName"] == "route" and set(mapping) == {"qa", "extract", "generate"}
    comps = schema["components"]["schemas"]
    requests = {route: comps[ref.rsplit("/", 1)[1]]["properties"]["request"]["$ref"].rsplit("/", 1)[1]
                for route, ref in mapping.items()}
    assert requests == {"qa": "QAInput", "extract": "ExtractInput", "generate": "GenerateInput"}
    for name in requests.values():  # the body of each route, without the adapter (and without stream)
        props = comps[name]["properties"]
        assert "adapter" not in props and "stream" not in props
        assert comps[name]["additionalProperties"] is False
        assert props["max_tokens"]["anyOf"][0]["maximum"] == 100
    assert comps["QAInput"]["required"] == ["question"] and comps["GenerateInput"]["required"] == ["instruction"]

    from bioinstruct.service.deps import get_caller, get_gateway

    # No engine: these bodies are refused by validation, before any handler could use a gateway.
    app.dependency_overrides[get_gateway] = app.dependency_overrides[get_caller] = lambda: None
    client = TestClient(app)
    cases = [
        ({"route": "qa", "adapters": ["base"], "request": {"instruction": "Say hi."}}, "request.question"),
        ({"route": "qa", "adapters": ["base"], "request": {"question": "q", "adapter": "qa"}}, "request"),
        ({"route": "generate", "adapters": ["base"], "request": {"instruction": "hi", "stream": True}}, "request"),
        ({"route": "extract", "adapters": ["base", "base"], "request": {"text": "x"}}, "adapters"),
        ({"adapters": ["base"], "request": {"text": "x"}}, "route"),
    ]
    messages = []
    for payload, param in cases:
        r = client.post("/compare", json=payload)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"] == param, r.json()
        messages.append(r.json()["error"]["message"])
    assert "'request.question' is required" in messages[0]
    assert "put adapters in 'adapters'" in messages[1] and "streaming is not available" in messages[2]
    assert "distinct" in messages[3] and "'route' is required" in messages[4]


def test_compare_sends_the_same_body_to_each_adapter():
    from pydantic import TypeAdapter

    from bioinstruct.service.protocol import CompareRequest, ExtractRequest

    req = TypeAdapter(CompareRequest).validate_python(
        {"route": "extract", "adapters": ["base", "ie@2"], "request": {"text": "Aspirin.", "max_tokens": 5.0}})
    bodies = req.bodies()
    assert [type(b) for b in bodies] == [ExtractRequest, ExtractRequest]
    assert [b.adapter for b in bodies] == ["base", "ie@2"]
    assert {b.text for b in bodies} == {"Aspirin."} and {b.max_tokens for b in bodies} == {5}
    assert bodies[0].entity_types == ExtractRequest(text="x").entity_types  # defaults as for /extract


def test_v1_completions_schema_says_prompts_times_n_at_most_the_limit():
    """schemathesis found `{"prompt": ["a", "b", "c"], "n": 3}` schema-valid and refused (9 > 8
    sequences): the schema now holds the same rule as `_check`, exactly."""
    import jsonschema

    schema = create_app(ServiceSettings()).openapi()
    body = schema["paths"]["/v1/completions"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    validator = jsonschema.Draft202012Validator(body)
    for k in range(1, MAX_N + 1):
        for n in range(1, MAX_N + 1):
            for prompt in (["p"] * k, [[1, 2]] * k):
                ok = validator.is_valid({"model": "qa", "prompt": prompt, "n": n})
                assert ok == (k * n <= MAX_N), (k, n, prompt[:1])
    # one prompt given as token ids is one sequence per n, however many ids it has
    assert validator.is_valid({"model": "qa", "prompt": list(range(50)), "n": MAX_N})
    assert not validator.is_valid({"model": "qa", "prompt": "p", "n": MAX_N + 1})
