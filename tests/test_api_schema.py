"""The service against its own OpenAPI schema, with schemathesis: generated requests for every
operation, with and without API keys. No answer may be a 500, every error must be offramp's JSON
error shape, and every 2xx must be JSON."""

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error

from helpers import Server, run_cli

KEY = "schema-test-key-0123456789"


def error_shape(ctx, response, case):
    """offramp's contract: an error is {"error": {"type", "message"}}; a success is JSON."""
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"} and {"type", "message"} <= set(body["error"]), body
    elif case.path != "/metrics":
        response.json()


@pytest.fixture(scope="module", params=["open", "keys"])
def served(request, fast_model, tmp_path_factory):
    extra = ["--rate-limit", "1000000"]
    headers = {}
    if request.param == "keys":
        d = tmp_path_factory.mktemp("keys")
        (d / "keys.txt").write_text(run_cli("hash-key", KEY).stdout)
        extra += ["--api-keys", str(d / "keys.txt"), "--public-endpoints"]
        headers = {"Authorization": f"Bearer {KEY}"}
    srv = Server(fast_model, *extra)
    yield srv, headers
    srv.stop()


@pytest.fixture(scope="module")
def api_schema(served):
    srv, _ = served
    return schemathesis.openapi.from_url(srv.url + "/openapi.json")


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_operation(case, served):
    srv, headers = served
    response = case.call(base_url=srv.url, headers=headers)
    case.validate_response(response, checks=[not_a_server_error])
    error_shape(None, response, case)
