"""Schemathesis, run against the OpenAPI document the running API serves, finds no 5xx.

Driven from Hypothesis directly (schemathesis' own pytest plugin lags behind our pytest):
every operation in the served document, a bounded number of generated requests each.
"""

import httpx
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import positive_data_acceptance

from tests.conftest import wait_for

EXAMPLES_PER_OPERATION = 15


def test_no_server_errors(api_server, api_headers, start_worker):
    # A ready service: /readyz rightly answers 503 while no worker consumes the queues.
    start_worker("--pool", "threads", "--concurrency", "2")
    wait_for(lambda: httpx.get(f"{api_server.url}/readyz").status_code == 200, timeout=30, message="ready")
    schema = schemathesis.openapi.from_url(f"{api_server.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert {op.label for op in operations} >= {"POST /v1/campaigns", "GET /v1/campaigns/{campaign_id}",
                                              "GET /readyz", "GET /metrics"}
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, derandomize=True,
                  suppress_health_check=list(HealthCheck), database=None)
        def no_server_error(case):
            # Every other default check runs (5xx, status codes, content types, response schemas).
            # Positive-data acceptance is left out: a recipient needs `to` or `number`, a rule the
            # generated schema cannot state, so schema-valid bodies may rightly get a 422.
            case.call_and_validate(headers=api_headers, excluded_checks=[positive_data_acceptance])

        no_server_error()
