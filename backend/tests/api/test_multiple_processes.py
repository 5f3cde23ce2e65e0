"""Several server processes on one database share the analyses, and each is done exactly once."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from app.utils.sample_data import make_normal_transactions
from tests.api.support import ApiServer, csv_bytes, register, upload_ok, wait_for_status

BATCH = 12


def test_two_processes_analyse_a_batch_each_session_exactly_once(api: ApiServer, second_api: ApiServer) -> None:
    account = register(api)
    servers = [api, second_api]
    dataset_ids = []
    for index in range(BATCH):
        with servers[index % 2].client() as client:
            content = csv_bytes(make_normal_transactions(300 + index, seed=100 + index))
            dataset_ids.append(upload_ok(client, account, f"batch-{index}.csv", content))

    def analyze(index: int) -> str:
        with servers[index % 2].client() as client:
            answer = client.post(f"/api/anomaly/datasets/{dataset_ids[index]}/analyze", headers=account.headers)
        assert answer.status_code == 202, answer.text
        session_id: str = answer.json()["session_id"]
        return session_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        session_ids = list(pool.map(analyze, range(BATCH)))

    with api.client() as client:
        statuses = [wait_for_status(client, account, dataset_id) for dataset_id in dataset_ids]
    assert [status["status"] for status in statuses] == ["analyzed"] * BATCH
    assert [status["row_count"] for status in statuses] == [300 + index for index in range(BATCH)]
    assert all(status["attempts"] == 1 for status in statuses)

    # Each server logs the sessions it analysed: together they name every session exactly once.
    analysed_by = {server.name: _analysed_sessions(server) for server in servers}
    counts = Counter(session for sessions in analysed_by.values() for session in sessions if session in session_ids)
    assert counts == Counter(set(session_ids))
    assert all(set(sessions) & set(session_ids) for sessions in analysed_by.values()), "one server did no work"


def _analysed_sessions(server: ApiServer) -> list[str]:
    return [event["session_id"] for event in server.events("analysis") if event["outcome"] == "analyzed"]
