"""Aliases as llm-d `InferenceModelRewrite` objects: what the Endpoint Picker needs to route by alias.

Behind an InferencePool, the Endpoint Picker reads the request body's `model` and scores pods by
whether that adapter is resident (`vllm:lora_requests_info`). Callers send aliases (`qa`), while the
engines hold pinned versions (`bioinstruct-qa@3`). One InferenceModelRewrite per alias rewrites
`model: qa` to the version(s) the alias points at, with the alias's traffic weights, before the
picker scores pods; the gateway then receives the pinned name, which it serves as is.

Schema: llm-d.ai/v1alpha2 InferenceModelRewrite (llm-d/llm-d-router,
config/crd/bases/llm-d.ai_inferencemodelrewrites.yaml). The chart renders the same objects from
`inferencePool.modelRewrites` (templates/inferencemodelrewrite.yaml); tests check both agree.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

from bioinstruct.registry import ALIAS_RE, REF_RE, RESERVED

API_VERSION = "llm-d.ai/v1alpha2"
KIND = "InferenceModelRewrite"
POOL_GROUP = "inference.networking.k8s.io"
# The CRD's bounds on a weight (int32, 1..1000000).
MAX_WEIGHT = 1_000_000
# A Kubernetes object name: a DNS-1123 subdomain of at most 253 characters.
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


class RewriteError(ValueError):
    """An alias record that cannot become a valid InferenceModelRewrite; the message says why."""


def rewrite_name(pool_name: str, alias: str) -> str:
    """`<pool>-<alias>`; an alias with characters a name cannot hold ('_', '.', a trailing '-')
    gets them replaced by '-' plus 8 hex digits of its SHA-256, so two aliases never share a name."""
    slug = re.sub(r"[^a-z0-9]+", "-", alias).strip("-")
    if slug != alias:
        slug = f"{slug}-{hashlib.sha256(alias.encode()).hexdigest()[:8]}"
    return f"{pool_name}-{slug}"


def _targets(alias: str, record: dict[str, Any]) -> list[dict[str, Any]]:
    target = record.get("target")
    weights = record.get("weights") or {}
    if not isinstance(weights, dict):
        raise RewriteError(f"alias {alias!r}: weights must be a mapping of name@version to an integer")
    if not weights:
        if not isinstance(target, str) or not REF_RE.match(target):
            raise RewriteError(f"alias {alias!r}: target {target!r} is not a pinned version <name>@<version>")
        return [{"modelRewrite": target}]  # no weight on a lone target: all of the traffic
    targets = []
    for ref, weight in sorted(weights.items()):
        if not isinstance(ref, str) or not REF_RE.match(ref):
            raise RewriteError(f"alias {alias!r}: weight key {ref!r} is not a pinned version "
                               "<name>@<version>")
        if isinstance(weight, bool) or not isinstance(weight, int) or not 0 <= weight <= MAX_WEIGHT:
            raise RewriteError(f"alias {alias!r}: weight of {ref} must be an integer from 0 to {MAX_WEIGHT}, "
                               f"not {weight!r}")
        if weight:  # a weight of 0 means no traffic: the CRD has no 0, so the target is left out
            targets.append({"modelRewrite": ref, "weight": weight})
    if not targets:
        raise RewriteError(f"alias {alias!r}: every weight is 0; give at least one version a positive weight")
    return targets


def rewrites_from_aliases(aliases: dict[str, dict], pool_name: str,
                          namespace: str | None = None) -> list[dict[str, Any]]:
    """One InferenceModelRewrite per alias, sorted by alias.

    `aliases` maps an alias to `{"alias", "target": "name@version", "weights": {"name@version": int}}`
    (the registry's AliasRecord as a dict; other fields are ignored, a `deleted` one is skipped);
    no (or empty) weights sends all of the alias's traffic to `target`; a weight of 0 (draining)
    leaves that version out. Raises RewriteError with a
    message naming the alias and the field to fix."""
    if not isinstance(pool_name, str) or not _DNS_LABEL.match(pool_name) or len(pool_name) > 63:
        raise RewriteError(f"pool name {pool_name!r} is not a valid InferencePool name (a DNS label: "
                           "a-z, 0-9 and '-', at most 63 characters)")
    if namespace is not None and (not _DNS_LABEL.match(namespace) or len(namespace) > 63):
        raise RewriteError(f"namespace {namespace!r} is not a valid namespace name")
    objects, names = [], {}
    for key in sorted(aliases):
        record = aliases[key]
        if not isinstance(record, dict):
            raise RewriteError(f"alias {key!r}: expected a record with 'target', got {type(record).__name__}")
        if record.get("deleted"):
            continue  # the registry's tombstone of a deleted alias: nothing to route
        alias = record.get("alias", key)
        if alias != key:
            raise RewriteError(f"alias {key!r}: its record names another alias, {alias!r}")
        if not isinstance(alias, str) or not ALIAS_RE.match(alias) or alias in RESERVED:
            raise RewriteError(f"alias {alias!r} is not a valid alias name")
        name = rewrite_name(pool_name, alias)
        if len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
            raise RewriteError(f"alias {alias!r}: object name {name!r} is not a valid Kubernetes name")
        if name in names:
            raise RewriteError(f"aliases {names[name]!r} and {alias!r} both map to object name {name!r}")
        names[name] = alias
        metadata: dict[str, Any] = {
            "name": name,
            "labels": {"app.kubernetes.io/part-of": "bioinstruct",
                       "app.kubernetes.io/component": "model-rewrite"},
            # An alias may end in '.', '_' or '-', which a label value may not: an annotation.
            "annotations": {"bioinstruct.io/alias": alias},
        }
        if namespace:
            metadata["namespace"] = namespace
        objects.append({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": metadata,
            "spec": {
                "poolRef": {"group": POOL_GROUP, "kind": "InferencePool", "name": pool_name},
                "rules": [{
                    "matches": [{"model": {"type": "Exact", "value": alias}}],
                    "targets": _targets(alias, record),
                }],
            },
        })
    return objects
