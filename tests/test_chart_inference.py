"""The chart's InferencePool mode and the alias rewrites, checked offline against the upstream CRDs.

- every example values file renders with the real helm, and every InferencePool and
  InferenceModelRewrite it renders validates against the CRD's openAPIV3Schema (tests/data/crds,
  copied from gateway-api-inference-extension and llm-d-router; see SOURCE.md there), made strict
  where the API server would silently prune a misspelled field, plus the CEL rules
  (x-kubernetes-validations) that jsonschema does not evaluate, checked here by hand;
- the pool selects the gateway pods and their port, the pods carry the engine-type label the
  Endpoint Picker reads, the HTTPRoute sends the OpenAI routes to the pool, the NetworkPolicy
  admits the picker and the proxy;
- bioinstruct/inference_rewrite.py turns aliases (with weights) into InferenceModelRewrite objects
  valid against the llm-d CRD, and the chart renders the very same objects from values;
- bad values are refused with a message that names what to change.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from bioinstruct.inference_rewrite import RewriteError, rewrite_name, rewrites_from_aliases
from tests import test_deploy
from tests.test_deploy import CHART, EXAMPLES, by_kind, render, template

# The real helm binary, fetched once by scripts/get-helm.sh (the fixture of tests/test_deploy.py).
helm = test_deploy.helm

ROOT = Path(__file__).resolve().parents[1]
CRDS = Path(__file__).parent / "data" / "crds"
SHARED_CRDS = ROOT.parent / "shared" / "crds"
POOL_CRD = "inference.networking.k8s.io_inferencepools.yaml"
REWRITE_CRD = "llm-d.ai_inferencemodelrewrites.yaml"
INFERENCEPOOL_EXAMPLE = CHART / "examples" / "values-inferencepool.yaml"
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
ENGINE_TYPE_KEYS = {"llm-d.ai/engine-type", "inference.networking.k8s.io/engine-type"}


# ---- the upstream schemas --------------------------------------------------------------------

def _strict(schema: Any) -> Any:
    """The CRD schema with additionalProperties: false on every object that lists its properties
    and preserves no unknown fields: the API server would drop such a field without a word (a
    typo that silently does nothing), so here it fails. metadata is left to the API server."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if ("properties" in out and "additionalProperties" not in out
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


def _crd(name: str) -> dict[str, Any]:
    return yaml.safe_load((CRDS / name).read_text())


def _validator(crd_name: str) -> tuple[dict[str, Any], jsonschema.Draft7Validator]:
    crd = _crd(crd_name)
    (version,) = [v for v in crd["spec"]["versions"] if v["served"] and v["storage"]]
    schema = _strict(version["schema"]["openAPIV3Schema"])
    jsonschema.Draft7Validator.check_schema(schema)
    api_version = f"{crd['spec']['group']}/{version['name']}"
    return {"apiVersion": api_version, "kind": crd["spec"]["names"]["kind"]}, jsonschema.Draft7Validator(schema)


def _cel_rules(schema: Any, path: str = "") -> list[tuple[str, str]]:
    """(path, rule) of every x-kubernetes-validations rule in a schema."""
    found = []
    if isinstance(schema, dict):
        for rule in schema.get("x-kubernetes-validations", []):
            found.append((path, rule["rule"]))
        for key, value in schema.items():
            if key == "properties":
                for prop, sub in value.items():
                    found += _cel_rules(sub, f"{path}.{prop}")
            elif key == "items":
                found += _cel_rules(value, f"{path}[]")
    return found


# The CEL rules of the InferencePool CRD, written out in Python. The test below fails when the
# CRD gains or changes a rule, so that a rule is never left unchecked.
POOL_CEL = {
    (".spec.endpointPickerRef", "self.kind != 'Service' || has(self.port)"),
    (".spec.targetPorts", "self.all(p1, self.exists_one(p2, p1.number==p2.number))"),
}


def check_pool_cel(obj: dict[str, Any]) -> list[str]:
    errors = []
    ref = obj["spec"].get("endpointPickerRef")
    if ref is not None and ref.get("kind", "Service") == "Service" and "port" not in ref:
        errors.append("endpointPickerRef: port is required when kind is 'Service' or unspecified")
    numbers = [p["number"] for p in obj["spec"].get("targetPorts", [])]
    if len(numbers) != len(set(numbers)):
        errors.append("targetPorts: port number must be unique")
    return errors


def check_rewrite_rules(obj: dict[str, Any]) -> list[str]:
    """The rules the llm-d CRD states in prose: weights on all targets of a rule or on none."""
    errors = []
    for i, rule in enumerate(obj["spec"]["rules"]):
        weighted = ["weight" in t for t in rule["targets"]]
        if any(weighted) and not all(weighted):
            errors.append(f"rules[{i}]: a weight on one target needs a weight on every target")
    return errors


def check_metadata(obj: dict[str, Any], *, label_name: bool = False) -> list[str]:
    name = obj["metadata"].get("name", "")
    pattern, limit = (DNS_LABEL, 63) if label_name else (DNS_SUBDOMAIN, 253)
    if not pattern.match(name) or len(name) > limit:
        return [f"metadata.name {name!r} is not a valid name"]
    return []


def validate(obj: dict[str, Any]) -> list[str]:
    """Every problem the API server (schema + CEL) would refuse, or prune silently."""
    crd_name = {"InferencePool": POOL_CRD, "InferenceModelRewrite": REWRITE_CRD}[obj["kind"]]
    ident, validator = _validator(crd_name)
    errors = [f"{'/'.join(map(str, e.absolute_path)) or '<root>'}: {e.message}"
              for e in validator.iter_errors(obj)]
    if (obj.get("apiVersion"), obj.get("kind")) != (ident["apiVersion"], ident["kind"]):
        errors.append(f"apiVersion/kind {obj.get('apiVersion')}/{obj.get('kind')} is not the CRD's {ident}")
    if obj["kind"] == "InferencePool":
        errors += check_pool_cel(obj) + check_metadata(obj, label_name=True)
    else:
        errors += check_rewrite_rules(obj) + check_metadata(obj)
    return errors


def test_vendored_crds_match_shared_when_present():
    for name in (POOL_CRD, REWRITE_CRD):
        assert (CRDS / name).is_file(), name
        if SHARED_CRDS.is_dir():
            assert (CRDS / name).read_bytes() == (SHARED_CRDS / name).read_bytes(), name
    for name in ("LICENSE.gateway-api-inference-extension", "LICENSE.llm-d-router", "SOURCE.md"):
        assert (CRDS / name).is_file(), name


def test_every_cel_rule_of_the_crds_is_checked_here():
    pool = _crd(POOL_CRD)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert set(_cel_rules(pool)) == POOL_CEL
    rewrite = _crd(REWRITE_CRD)["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    assert _cel_rules(rewrite) == []  # its weight rule is prose only: check_rewrite_rules


# ---- rendering --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def example_renders(helm) -> dict[str, list[dict]]:
    return {p.stem: render(helm, [p]) for p in EXAMPLES}


@pytest.fixture(scope="module")
def pool_render(example_renders) -> list[dict]:
    return example_renders["values-inferencepool"]


def test_every_example_renders_and_its_inference_objects_validate(example_renders):
    assert "values-inferencepool" in example_renders
    checked = 0
    for name, docs in example_renders.items():
        for obj in docs:
            if obj["kind"] in ("InferencePool", "InferenceModelRewrite"):
                assert validate(obj) == [], (name, obj["metadata"]["name"], validate(obj))
                checked += 1
    assert checked >= 3  # the pool and two rewrites of values-inferencepool.yaml


def test_inference_pool_off_by_default(example_renders, helm):
    for name, docs in {"default": render(helm), **example_renders}.items():
        if name == "values-inferencepool":
            continue
        kinds = {d["kind"] for d in docs}
        assert not kinds & {"InferencePool", "InferenceModelRewrite", "HTTPRoute"}, name
        for deploy in by_kind(docs, "Deployment"):
            assert not ENGINE_TYPE_KEYS & deploy["spec"]["template"]["metadata"]["labels"].keys(), name


def _gateway(docs: list[dict]) -> dict:
    (deploy,) = [d for d in by_kind(docs, "Deployment")
                 if d["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"]
    return deploy


def test_pool_selects_the_gateway_pods_and_port(pool_render):
    (pool,) = by_kind(pool_render, "InferencePool")
    deploy = _gateway(pool_render)
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    assert pool["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    (container,) = deploy["spec"]["template"]["spec"]["containers"]
    (http,) = [p for p in container["ports"] if p["name"] == "http"]
    assert pool["spec"]["targetPorts"] == [{"number": http["containerPort"]}]
    # The picker picks its metric names by this label (llm-d's key and the older GAIE one).
    for key in ENGINE_TYPE_KEYS:
        assert pod_labels[key] == "vllm", key
    ref = pool["spec"]["endpointPickerRef"]
    assert ref == {"kind": "Service", "name": "bio-bioinstruct-epp", "port": {"number": 9002},
                   "failureMode": "FailClose"}
    # Selector labels also select no other workload of the release (split mode's engine).
    for other in by_kind(pool_render, "Deployment"):
        if other is not deploy:
            assert not pool["spec"]["selector"]["matchLabels"].items() <= \
                other["spec"]["template"]["metadata"]["labels"].items()


def test_http_route_sends_openai_routes_to_the_pool(pool_render):
    (pool,) = by_kind(pool_render, "InferencePool")
    (route,) = by_kind(pool_render, "HTTPRoute")
    (svc,) = [s for s in by_kind(pool_render, "Service")
              if s["metadata"]["labels"].get("app.kubernetes.io/component") == "gateway"]
    assert route["apiVersion"] == "gateway.networking.k8s.io/v1"
    assert route["spec"]["parentRefs"] == [{"name": "inference-gateway"}]
    assert route["spec"]["hostnames"] == ["bioinstruct.example.com"]
    rules = route["spec"]["rules"]
    assert 1 <= len(rules) <= 16  # the Gateway API's bound
    to_pool = [r for r in rules if r["backendRefs"][0].get("kind") == "InferencePool"]
    to_svc = [r for r in rules if r["backendRefs"][0].get("kind") == "Service"]
    (pool_rule,), (svc_rule,) = to_pool, to_svc
    assert {m["path"]["value"] for m in pool_rule["matches"]} == {"/v1/completions", "/v1/chat/completions"}
    assert all(m["path"]["type"] == "Exact" for m in pool_rule["matches"])
    assert pool_rule["backendRefs"] == [{"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                         "name": pool["metadata"]["name"]}]
    assert svc_rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    assert svc_rule["backendRefs"] == [{"kind": "Service", "name": svc["metadata"]["name"],
                                        "port": svc["spec"]["ports"][0]["port"]}]
    for rule in rules:
        assert rule["timeouts"] == {"request": "600s"}
        for m in rule["matches"]:
            assert m["path"]["value"].startswith("/")


def test_network_policy_admits_picker_and_proxy(pool_render):
    deploy = _gateway(pool_render)
    pod_labels = deploy["spec"]["template"]["metadata"]["labels"]
    values = yaml.safe_load(INFERENCEPOOL_EXAMPLE.read_text())
    policies = [p for p in by_kind(pool_render, "NetworkPolicy")
                if p["spec"]["podSelector"]["matchLabels"].items() <= pod_labels.items()]
    (policy,) = policies
    admitted = [peer for rule in policy["spec"]["ingress"] for peer in rule.get("from", [])
                if {"port": "http", "protocol": "TCP"} in rule["ports"]]
    for peer in values["inferencePool"]["networkPolicy"]["pickerFrom"]:
        assert peer in admitted, peer
    for peer in values["inferencePool"]["networkPolicy"]["proxyFrom"]:
        assert peer in admitted, peer
    for peer in values["networkPolicy"]["ingressFrom"]:
        assert peer in admitted, peer
    # Still the http port only: nothing else on the pod is opened.
    assert all(rule["ports"] == [{"port": "http", "protocol": "TCP"}] for rule in policy["spec"]["ingress"])


def test_minimal_pool_values_render_valid(helm, tmp_path):
    """The smallest InferencePool setup (no route, no rewrites, default network policy) on the
    default values, in both engine modes."""
    for extra in ({}, {"mode": "split", "device": "cpu"}):
        docs = render(helm, [{"inferencePool": {"enabled": True}, **extra}], tmp_path)
        (pool,) = by_kind(docs, "InferencePool")
        assert validate(pool) == []
        assert pool["metadata"]["name"] == "bio-bioinstruct"
        assert pool["spec"]["endpointPickerRef"]["name"] == "bio-bioinstruct-epp"
        assert not by_kind(docs, "HTTPRoute") and not by_kind(docs, "InferenceModelRewrite")
        labels = _gateway(docs)["spec"]["template"]["metadata"]["labels"]
        assert pool["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_validation_is_live():
    """A pool that breaks the schema, a CEL rule, or carries a misspelled field is refused."""
    good = {
        "apiVersion": "inference.networking.k8s.io/v1", "kind": "InferencePool",
        "metadata": {"name": "pool"},
        "spec": {"selector": {"matchLabels": {"app": "x"}}, "targetPorts": [{"number": 8000}],
                 "endpointPickerRef": {"name": "pool-epp", "port": {"number": 9002}}},
    }
    assert validate(good) == []
    breakages = {
        "port range": lambda o: o["spec"]["targetPorts"][0].update(number=70000),
        "missing selector": lambda o: o["spec"].pop("selector"),
        "duplicate ports (CEL)": lambda o: o["spec"]["targetPorts"].append({"number": 8000}),
        "service without port (CEL)": lambda o: o["spec"]["endpointPickerRef"].pop("port"),
        "misspelled field": lambda o: o["spec"].update(targetPort=[{"number": 1}]),
        "bad failure mode": lambda o: o["spec"]["endpointPickerRef"].update(failureMode="Open"),
        "bad name": lambda o: o["metadata"].update(name="Pool_1"),
        "wrong apiVersion": lambda o: o.update(apiVersion="inference.networking.x-k8s.io/v1alpha2"),
        "empty selector": lambda o: o["spec"]["selector"].update(matchLabels={}),
    }
    for what, breakage in breakages.items():
        broken = copy.deepcopy(good)
        breakage(broken)
        assert validate(broken), what
    rewrite = rewrites_from_aliases({"qa": {"alias": "qa", "target": "bioinstruct-qa@3"}}, "pool")[0]
    broken = copy.deepcopy(rewrite)
    broken["spec"]["rules"][0]["targets"] = [{"modelRewrite": "a@1", "weight": 5}, {"modelRewrite": "a@2"}]
    assert validate(broken) == ["rules[0]: a weight on one target needs a weight on every target"]
    broken["spec"]["rules"][0]["targets"] = [{"modelRewrite": "a@1", "weight": 0}]
    assert validate(broken)  # the CRD's minimum weight is 1
    broken["spec"].pop("poolRef")
    assert any("poolRef" in e for e in validate(broken))


# ---- aliases -> InferenceModelRewrite ------------------------------------------------------

ALIASES = {
    "qa": {"alias": "qa", "target": "bioinstruct-qa@3"},
    "ie": {"alias": "ie", "target": "bioinstruct-ie@2",
           "weights": {"bioinstruct-ie@2": 90, "bioinstruct-ie@3": 10}},
    "gen": {"alias": "gen", "target": "bioinstruct-gen@1", "weights": {}},
    "canary_v2.": {"alias": "canary_v2.", "target": "x@1", "weights": {"x@1": 1, "x@2": 0, "y@7": 3}},
}


def test_rewrites_from_aliases_valid_and_faithful():
    objects = rewrites_from_aliases(ALIASES, "bio-bioinstruct", "ml")
    assert [o["metadata"]["annotations"]["bioinstruct.io/alias"] for o in objects] == sorted(ALIASES)
    for obj in objects:
        assert validate(obj) == [], validate(obj)
        assert obj["metadata"]["namespace"] == "ml"
        assert obj["spec"]["poolRef"] == {"group": "inference.networking.k8s.io", "kind": "InferencePool",
                                          "name": "bio-bioinstruct"}
    by_alias = {o["metadata"]["annotations"]["bioinstruct.io/alias"]: o["spec"]["rules"] for o in objects}
    assert by_alias["qa"] == [{"matches": [{"model": {"type": "Exact", "value": "qa"}}],
                               "targets": [{"modelRewrite": "bioinstruct-qa@3"}]}]
    assert by_alias["gen"][0]["targets"] == [{"modelRewrite": "bioinstruct-gen@1"}]  # empty weights: all
    assert by_alias["ie"][0]["targets"] == [{"modelRewrite": "bioinstruct-ie@2", "weight": 90},
                                            {"modelRewrite": "bioinstruct-ie@3", "weight": 10}]
    # A weight of 0 (no traffic) is left out: the CRD's weights start at 1.
    assert by_alias["canary_v2."][0]["targets"] == [{"modelRewrite": "x@1", "weight": 1},
                                                    {"modelRewrite": "y@7", "weight": 3}]
    names = {o["metadata"]["name"] for o in objects}
    assert {"bio-bioinstruct-qa", "bio-bioinstruct-ie", "bio-bioinstruct-gen"} <= names
    assert rewrites_from_aliases(ALIASES, "p")[0]["metadata"].get("namespace") is None
    # The registry's own records (AliasRecord.model_dump()) go in as they are; a tombstone is skipped.
    from bioinstruct.registry import AliasRecord

    records = {"qa": AliasRecord(alias="qa", target="q@2", weights={"q@1": 0, "q@2": 5}, updated_at="t"),
               "old": AliasRecord(alias="old", target="o@1", updated_at="t", deleted=True)}
    (only,) = rewrites_from_aliases({a: r.model_dump() for a, r in records.items()}, "p")
    assert only["spec"]["rules"][0]["targets"] == [{"modelRewrite": "q@2", "weight": 5}]
    assert rewrites_from_aliases({}, "p") == []


def test_rewrite_names_never_collide():
    # '_' and '.' cannot all stay in a name: the slugs match, the hash suffix keeps them apart.
    names = {rewrite_name("p", a) for a in ("a_b", "a.b", "a-b", "a--b", "a-b-", "a_b_")}
    assert len(names) == 6
    for name in names:
        assert DNS_SUBDOMAIN.match(name), name
    assert rewrite_name("p", "qa") == "p-qa"


@pytest.mark.parametrize(("aliases", "pool", "message"), [
    ({"qa": {"target": "qa"}}, "p", "target 'qa' is not a pinned version"),
    ({"qa": {"target": "q@1", "weights": {"q@1": -1}}}, "p", "integer from 0 to 1000000"),
    ({"qa": {"target": "q@1", "weights": {"q@1": 1_000_001}}}, "p", "integer from 0 to 1000000"),
    ({"qa": {"target": "q@1", "weights": {"q@1": True}}}, "p", "integer from 0 to 1000000"),
    ({"qa": {"target": "q@1", "weights": {"q@1": 0}}}, "p", "every weight is 0"),
    ({"qa": {"target": "q@1", "weights": {"q": 5}}}, "p", "weight key 'q' is not a pinned version"),
    ({"qa": {"target": "q@1", "weights": [1]}}, "p", "weights must be a mapping"),
    ({"base": {"target": "q@1"}}, "p", "not a valid alias name"),
    ({"Q A": {"target": "q@1"}}, "p", "not a valid alias name"),
    ({"qa": {"alias": "ie", "target": "q@1"}}, "p", "names another alias"),
    ({"qa": "q@1"}, "p", "expected a record"),
    ({"qa": {"target": "q@1"}}, "Pool_1", "not a valid InferencePool name"),
])
def test_rewrites_refuse_bad_records(aliases, pool, message):
    with pytest.raises(RewriteError, match=re.escape(message)):
        rewrites_from_aliases(aliases, pool)


def test_chart_renders_the_same_rewrites_as_the_export(pool_render, helm, tmp_path):
    """The chart's template and bioinstruct/inference_rewrite.py write the same objects."""
    values = yaml.safe_load(INFERENCEPOOL_EXAMPLE.read_text())
    cases = [(values["inferencePool"]["modelRewrites"], pool_render)]
    odd = {alias: {k: v for k, v in rec.items() if k != "alias"} for alias, rec in ALIASES.items()}
    cases.append((odd, render(helm, [{"inferencePool": {"enabled": True, "modelRewrites": odd}}], tmp_path)))
    for rewrites, docs in cases:
        (pool,) = by_kind(docs, "InferencePool")
        rendered = by_kind(docs, "InferenceModelRewrite")
        expected = rewrites_from_aliases({a: {"alias": a, **r} for a, r in rewrites.items()},
                                         pool["metadata"]["name"])
        assert [(o["metadata"]["name"], o["spec"]) for o in rendered] == \
            [(o["metadata"]["name"], o["spec"]) for o in expected]
        for obj in rendered:
            assert validate(obj) == []
            assert obj["metadata"]["annotations"] == expected[rendered.index(obj)]["metadata"]["annotations"]


# ---- bad values ------------------------------------------------------------------------------

@pytest.mark.parametrize(("values", "field"), [
    pytest.param({"inferencePool": {"enabled": True, "httpRoute": {"enabled": True}}}, "parentRefs",
                 id="route-without-gateway"),
    pytest.param({"inferencePool": {"engineType": "v llm"}}, "engineType", id="engine-type-not-a-label"),
    pytest.param({"inferencePool": {"engineTypeLabels": ["Bad Key"]}}, "engineTypeLabels", id="bad-label-key"),
    pytest.param({"inferencePool": {"endpointPicker": {"failureMode": "Open"}}}, "failureMode",
                 id="unknown-failure-mode"),
    pytest.param({"inferencePool": {"endpointPicker": {"port": 0}}}, "port", id="picker-port-zero"),
    pytest.param({"inferencePool": {"name": "Pool_1"}}, "name", id="pool-name-not-dns"),
    pytest.param({"inferencePool": {"modelRewrites": {"base": {"target": "a@1"}}}}, "modelRewrites",
                 id="rewrite-of-reserved-alias"),
    pytest.param({"inferencePool": {"modelRewrites": {"qa": {"target": "qa"}}}}, "target",
                 id="rewrite-target-not-pinned"),
    pytest.param({"inferencePool": {"modelRewrites": {"qa": {"target": "a@1", "weights": {"a@1": -5}}}}},
                 "weights", id="negative-weight"),
    pytest.param({"inferencePool": {"enabeld": True}}, "enabeld", id="misspelled-key"),
    pytest.param({"inferencePool": {"httpRoute": {"requestTimeout": "10 minutes"}}}, "requestTimeout",
                 id="timeout-not-a-duration"),
])
def test_schema_refuses_bad_pool_values(helm, tmp_path, values, field):
    proc = template(helm, [values], tmp_path)
    assert proc.returncode != 0, f"rendered with bad values {values}"
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert field in proc.stderr, proc.stderr


@pytest.mark.parametrize(("values", "message"), [
    pytest.param({"inferencePool": {"enabled": True},
                  "networkPolicy": {"ingressFrom": [{"namespaceSelector": {"matchLabels": {"a": "b"}}}]}},
                 "also set inferencePool.networkPolicy.pickerFrom and proxyFrom", id="policy-shuts-out-picker"),
    pytest.param({"inferencePool": {"enabled": True,
                                    "modelRewrites": {"qa": {"target": "a@1", "weights": {"a@1": 0}}}}},
                 "inferencePool.modelRewrites.qa: every weight is 0", id="all-weights-zero"),
])
def test_chart_refuses_inconsistent_pool_values(helm, tmp_path, values, message):
    proc = template(helm, [values], tmp_path)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


def test_deploy_doc_names_real_pool_monitoring_and_observability_values():
    """Values of the new sections of docs/DEPLOY.md exist (test_deploy checks the older prefixes)."""
    text = (ROOT / "docs" / "DEPLOY.md").read_text()
    values = test_deploy._value_paths(yaml.safe_load((CHART / "values.yaml").read_text()))
    named = set(re.findall(r"`((?:inferencePool|monitoring|observability)\.[A-Za-z0-9_.]+)`", text))
    assert len(named) >= 15, named
    unknown = {n for n in named if n not in values}
    assert not unknown, f"DEPLOY.md names values the chart does not have: {sorted(unknown)}"
    assert "values-inferencepool.yaml" in text
    for key in ENGINE_TYPE_KEYS:
        assert key in text
