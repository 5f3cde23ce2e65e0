"""Schemathesis against the live ``/openapi.json``: generated requests, valid and invalid, on every operation
of the real server, authenticated with a real token. None may answer 5xx or leak a trace or a path.

The path parameter ``dataset_id`` is pinned to an analysed dataset of the fuzzing user, so the requests
reach the status, anomalies, results and analyze code rather than stopping at 404; ``DELETE`` is left out
for that reason (it would remove the dataset under the other operations) and is covered by its own tests.
The number of examples is bounded to keep the suite's time in check.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from app.utils.sample_data import make_normal_transactions
from tests.api.support import ApiServer, csv_bytes, register, upload_ok, wait_for_status

EXAMPLES_PER_OPERATION = 25
LEAK_MARKERS = ("Traceback", 'File "', "site-packages", "/backend/app/")
# Failed logins made by the fuzzer count against this (loopback) address, not the other tests' 127.0.0.1.
FUZZER_ADDRESS = "127.0.20.1"


@pytest.fixture(scope="module")
def fuzz_target(api: ApiServer) -> tuple[Any, dict[str, str], str]:
    """The live schema (without DELETE), the fuzzing user's headers and its analysed dataset's id."""
    account = register(api, "fuzzer")
    with api.client() as client:
        dataset_id = upload_ok(client, account, "fuzz.csv", csv_bytes(make_normal_transactions(300, seed=51)))
        assert client.post(f"/api/anomaly/datasets/{dataset_id}/analyze", headers=account.headers).status_code == 202
        assert wait_for_status(client, account, dataset_id)["status"] == "analyzed"
    schema = schemathesis.openapi.from_url(f"{api.url}/openapi.json").exclude(method="DELETE")
    return schema, {**account.headers, "X-Forwarded-For": FUZZER_ADDRESS}, dataset_id


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=lambda mode: mode.value)
def test_no_generated_request_gets_a_server_error(fuzz_target: tuple[Any, dict[str, str], str], mode: Any) -> None:
    schema, headers, dataset_id = fuzz_target
    failures: dict[str, str] = {}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 10
    for operation in operations:
        pinned = {"dataset_id": dataset_id} if "{dataset_id}" in operation.path else None

        @given(case=operation.as_strategy(mode, path_parameters=pinned))
        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        def exercise(case: Any) -> None:
            response = case.call_and_validate(headers=headers, checks=[not_a_server_error], timeout=60)
            if response.headers.get("content-type", [""])[0].startswith("application/json"):
                leaked = [marker for marker in LEAK_MARKERS if marker in response.text]
                assert not leaked, f"leaked {leaked}: {response.text[:300]}"

        try:
            exercise()
        except Unsatisfiable:
            continue  # nothing to vary in this mode (no parameters, or none that can be made invalid)
        except Exception as error:  # noqa: BLE001 - every operation is tried; the failures are reported together
            failures[f"{operation.method.upper()} {operation.path}"] = str(error)[:2000]
    assert not failures, "\n\n".join(f"{name}:\n{message}" for name, message in failures.items())
