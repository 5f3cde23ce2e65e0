"""Several servers (each with its job worker) on one database share the analyses, and each is done exactly once."""

from __future__ import annotations

from collections import Counter
from concurrent.futures import ThreadPoolExecutor

from app.utils.sample_data import make_normal_transactions
from tests.api.support import ApiServer, analysis_events, csv_bytes, register, upload_ok, wait_for_status

BATCH = 12
USERS = 2  # each within the limit on analyses in progress per user


def test_two_processes_analyse_a_batch_each_session_exactly_once(api: ApiServer, second_api: ApiServer) -> None:
    accounts = [register(api) for _ in range(USERS)]
    servers = [api, second_api]
    dataset_ids = []
    for index in range(BATCH):
        with servers[index % 2].client() as client:
            content = csv_bytes(make_normal_transactions(300 + index, seed=100 + index))
            dataset_ids.append(upload_ok(client, accounts[index % USERS], f"batch-{index}.csv", content))

    def analyze(index: int) -> str:
        with servers[index % 2].client() as client:
            answer = client.post(
                f"/api/anomaly/datasets/{dataset_ids[index]}/analyze", headers=accounts[index % USERS].headers
            )
        assert answer.status_code == 202, answer.text
        session_id: str = answer.json()["session_id"]
        return session_id

    with ThreadPoolExecutor(max_workers=4) as pool:
        session_ids = list(pool.map(analyze, range(BATCH)))

    with api.client() as client:
        statuses = [
            wait_for_status(client, accounts[index % USERS], dataset_id) for index, dataset_id in enumerate(dataset_ids)
        ]
    assert [status["status"] for status in statuses] == ["analyzed"] * BATCH
    assert [status["row_count"] for status in statuses] == [300 + index for index in range(BATCH)]
    assert all(status["attempts"] == 1 for status in statuses)

    # Each server's job worker logs the sessions it analysed: together they name every session exactly once.
    events = analysis_events(servers, set(session_ids))
    counts = Counter(event["session_id"] for event in events if event["outcome"] == "analyzed")
    assert counts == Counter(set(session_ids))
    workers = {event["worker"] for event in events if event["outcome"] == "analyzed"}
    assert len(workers) == 2, f"one worker did no work: {workers}"
