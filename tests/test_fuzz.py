"""Schemathesis over every route of the OpenAPI schema, with and without valid auth.

Zero 5xx; every response's status, content type and body match what the schema declares.
`make test` runs 10 examples per route, mode and auth (40 requests a route); `make soak` a few hundred
(BIOINSTRUCT_FUZZ_EXAMPLES).
"""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import (
    content_type_conformance,
    negative_data_rejection,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.generation import GenerationMode

from bioinstruct.service.app import create_app
from tests.service_helpers import ExtraGateway

pytestmark = pytest.mark.engine

EXAMPLES = int(os.environ.get("BIOINSTRUCT_FUZZ_EXAMPLES", "10"))
API_KEY, ADMIN = "fuzz-key", "fuzz-admin"


@pytest.fixture(scope="module")
def fuzz_gateway(engine, core, tmp_path_factory):
    with ExtraGateway(engine, core, tmp_path_factory.mktemp("fuzz-registry"), api_keys={API_KEY: ["*"]},
                      admin_token=ADMIN, max_tokens_limit=8, max_inflight=8, max_queue=64,
                      publish_root=tmp_path_factory.mktemp("fuzz-publish")) as gw:
        yield gw


# The schema is static: build it from the app without starting anything; requests go to
# the live fuzz_gateway (real engine) at call time.
schema = schemathesis.openapi.from_dict(create_app().openapi())
schema.config.generation.update(modes=list(GenerationMode))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          negative_data_rejection]


FUZZ = settings(max_examples=EXAMPLES, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))


@schema.parametrize()
@FUZZ
def test_every_route_with_valid_auth(case, fuzz_gateway):
    token = ADMIN if case.path.startswith("/admin") else API_KEY
    case.call_and_validate(base_url=fuzz_gateway.base_url, headers={"Authorization": f"Bearer {token}"},
                           checks=CHECKS, timeout=120)


@schema.parametrize()
@FUZZ
def test_every_route_without_auth(case, fuzz_gateway):
    case.call_and_validate(base_url=fuzz_gateway.base_url, checks=CHECKS, timeout=120)
