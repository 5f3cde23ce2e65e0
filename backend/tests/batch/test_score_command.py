"""``python -m app.batch score`` end to end on a real two-worker cluster: what a user runs, sees and gets."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.batch.support import (
    RESULT_COLUMNS,
    BatchCommand,
    scored_rows,
    staging_folders,
    summary,
    transactions,
)


@pytest.fixture
def frame() -> pd.DataFrame:
    return transactions(900, seed=11)


def test_csv_and_parquet_files_and_globs_are_scored_row_by_row_in_input_order(
    batch: BatchCommand, scheduler_address: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    (tmp_path / "parts").mkdir()
    frame.iloc[:300].to_csv(tmp_path / "first.csv", index=False)
    frame.iloc[300:600].to_parquet(tmp_path / "parts" / "p1.parquet", row_group_size=120)
    frame.iloc[600:].to_parquet(tmp_path / "parts" / "p2.parquet", row_group_size=120)
    frame.iloc[:300].to_parquet(tmp_path / "first-again.parquet")
    output = tmp_path / "scored"

    outcome = batch.score(
        "--input", tmp_path / "first.csv",
        "--input", tmp_path / "parts" / "*.parquet", tmp_path / "first-again.parquet",
        "--output", output, "--partition-rows", "100", scheduler=scheduler_address,
    )  # fmt: skip

    assert outcome.status == 0, outcome.stderr
    rows, result = scored_rows(output), summary(output)
    expected = pd.concat([frame, frame.iloc[:300]], ignore_index=True)
    assert list(rows.columns) == [*frame.columns, *RESULT_COLUMNS]
    value_columns = [column for column in frame.columns if column != "timestamp"]
    pd.testing.assert_frame_equal(rows[value_columns], expected[value_columns], check_dtype=False)
    assert rows["anomaly_score"].dtype == np.float64 and rows["is_anomaly"].dtype == bool
    assert (rows["is_anomaly"] == (rows["anomaly_score"] > result["threshold"])).all()
    assert set(rows["top_feature"].dropna()) <= set(frame.columns)
    # The same rows score the same from CSV as from Parquet.
    np.testing.assert_allclose(rows["anomaly_score"][900:], rows["anomaly_score"][:300], rtol=1e-9, atol=0)
    assert (rows["top_feature"][900:].to_numpy() == rows["top_feature"][:300].to_numpy()).all()
    assert result["rows"] == 1200 and result["anomalies"] == int(rows["is_anomaly"].sum())
    names = ("first.csv", "parts/p1.parquet", "parts/p2.parquet", "first-again.parquet")
    assert [(entry["path"], entry["rows"]) for entry in result["inputs"]] == [(str(tmp_path / n), 300) for n in names]
    assert result["partitions"] == 3 + 5 + 5 + 3 and all(part["rows"] <= 100 for part in result["parts"])
    assert (result["model"], result["workers"], result["scheduler"]) == ("AutoEncoder", 2, scheduler_address)
    assert staging_folders(output) == []


def test_each_worker_loads_the_model_once_however_many_partitions_it_scores(
    batch: BatchCommand, scheduler_address: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.to_parquet(tmp_path / "rows.parquet", row_group_size=30)
    outcome = batch.score(
        "--input", tmp_path / "rows.parquet", "--output", tmp_path / "scored", "--partition-rows", "30",
        scheduler=scheduler_address,
    )  # fmt: skip
    assert outcome.status == 0, outcome.stderr
    result = summary(tmp_path / "scored")
    workers = result["by_worker"]
    assert len(workers) == result["workers"] == 2
    assert [worker["model_loads"] for worker in workers.values()] == [1, 1]
    assert result["model_loads"] == 2 < result["partitions"] == 30 == sum(w["partitions"] for w in workers.values())


def test_progress_goes_to_stderr_and_the_summary_to_stdout_and_beside_the_output(
    batch: BatchCommand, scheduler_address: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.to_csv(tmp_path / "rows.csv", index=False)
    outcome = batch.score(
        "--input", tmp_path / "rows.csv", "--output", tmp_path / "scored", "--partition-rows", "300",
        scheduler=scheduler_address,
    )  # fmt: skip
    assert outcome.status == 0, outcome.stderr
    assert "scoring: 100% (3/3 partitions, 900/900 rows" in outcome.stderr  # plain lines: stderr is not a terminal
    result = summary(tmp_path / "scored")
    assert outcome.stdout.startswith(f"Scored 900 rows from 1 file(s) in {result['seconds']:,.1f} s")
    assert f"Anomalies: {result['anomalies']:,} " in outcome.stdout
    model_line = f"Model: AutoEncoder, version {result['model_version']}, loaded 2 times over 3 partition(s)"
    assert model_line in outcome.stdout
    assert f"Output: {tmp_path / 'scored'} (3 Parquet part(s); summary in _summary.json)" in outcome.stdout
    assert {
        "rows", "anomalies", "threshold", "threshold_percentile", "model", "model_version", "inputs",
        "partitions", "workers", "model_loads", "seconds", "output", "columns", "parts",
    } <= set(result)  # fmt: skip


def test_a_threshold_percentile_rethresholds_the_same_scores(
    batch: BatchCommand, scheduler_address: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.to_parquet(tmp_path / "rows.parquet")
    # The model named as it is under MODELS_DIR, then as the default (no --model), re-thresholded.
    for name, extra in (("model", ["--model", "AutoEncoder"]), ("strict", ["--threshold-percentile", "99.5"])):
        outcome = batch.score("--input", tmp_path / "rows.parquet", "--output", tmp_path / name, *extra,
                              scheduler=scheduler_address)  # fmt: skip
        assert outcome.status == 0, outcome.stderr
    default, strict = summary(tmp_path / "model"), summary(tmp_path / "strict")
    assert (default["threshold_percentile"], strict["threshold_percentile"]) == (95.0, 99.5)
    assert strict["threshold"] > default["threshold"]
    rows = scored_rows(tmp_path / "strict")
    assert (rows["anomaly_score"] == scored_rows(tmp_path / "model")["anomaly_score"]).all()
    assert strict["anomalies"] == int((rows["anomaly_score"] > strict["threshold"]).sum()) < default["anomalies"]


def test_a_complete_result_is_kept_unless_overwrite_and_then_replaced(
    batch: BatchCommand, scheduler_address: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.to_parquet(tmp_path / "rows.parquet")
    output = tmp_path / "scored"
    first = batch.score("--input", tmp_path / "rows.parquet", "--output", output, scheduler=scheduler_address)
    assert first.status == 0, first.stderr
    earlier = (output / "_summary.json").read_text()

    refused = batch.score("--input", tmp_path / "rows.parquet", "--output", output, "--threshold-percentile", "99")
    assert refused.status == 2
    assert refused.error_line == (
        f"error: {output} already holds a complete result (_summary.json): pass --overwrite to replace it, "
        "or choose another folder."
    )
    assert (output / "_summary.json").read_text() == earlier

    replaced = batch.score("--input", tmp_path / "rows.parquet", "--output", output, "--threshold-percentile", "99",
                           "--overwrite", scheduler=scheduler_address)  # fmt: skip
    assert replaced.status == 0, replaced.stderr
    assert summary(output)["threshold_percentile"] == 99.0
    assert len(scored_rows(output)) == 900 and staging_folders(output) == []


def test_a_partition_that_cannot_be_read_fails_the_run_and_keeps_the_earlier_result(
    batch: BatchCommand, scheduler_address: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.to_csv(tmp_path / "rows.csv", index=False)
    output = tmp_path / "scored"
    assert batch.score("--input", tmp_path / "rows.csv", "--output", output, scheduler=scheduler_address).status == 0
    earlier = {path.name: path.read_bytes() for path in output.iterdir()}
    lines = (tmp_path / "rows.csv").read_text().splitlines()
    lines[650] += ",1,2"  # data row 650 has more fields than the header
    (tmp_path / "ragged.csv").write_text("\n".join(lines) + "\n")

    outcome = batch.score(
        "--input", tmp_path / "rows.csv", tmp_path / "ragged.csv", "--output", output, "--overwrite",
        "--partition-rows", "200", scheduler=scheduler_address,
    )  # fmt: skip

    assert outcome.status == 2
    assert outcome.error_line.startswith(
        f"error: {tmp_path / 'ragged.csv'} (rows 601-800): 'ragged.csv' could not be parsed as CSV"
    )
    assert {path.name: path.read_bytes() for path in output.iterdir()} == earlier
    assert staging_folders(output) == []


def test_an_interrupted_run_leaves_no_output_and_the_cluster_as_it_was(
    batch: BatchCommand, scheduler_address: str, tmp_path: Path
) -> None:
    transactions(20_000, seed=3).to_parquet(tmp_path / "rows.parquet")
    output = tmp_path / "scored"
    process = batch.start("--input", tmp_path / "rows.parquet", "--output", output, "--partition-rows", "50",
                          scheduler=scheduler_address)  # fmt: skip
    assert process.stderr is not None
    for line in process.stderr:  # 400 partitions: interrupted a tenth of the way
        if line.startswith("scoring: 10%"):
            process.send_signal(signal.SIGINT)
            break
    _, rest = process.communicate(timeout=120)
    assert process.returncode == 130, rest
    assert rest.splitlines()[-1] == "interrupted: no output written"
    assert not output.exists() and staging_folders(output) == []
    again = batch.score("--input", tmp_path / "rows.parquet", "--output", output, scheduler=scheduler_address)
    assert again.status == 0, again.stderr
    assert summary(output)["rows"] == 20_000


def test_columns_the_model_needs_are_checked_in_every_file_before_scoring_starts(
    batch: BatchCommand, scheduler_address: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.to_parquet(tmp_path / "a.parquet")
    frame.drop(columns=["value3", "value7"]).to_csv(tmp_path / "b.csv", index=False)
    outcome = batch.score("--input", tmp_path / "a.parquet", tmp_path / "b.csv", "--output", tmp_path / "scored",
                          scheduler=scheduler_address)  # fmt: skip
    assert outcome.status == 2
    assert outcome.error_line.startswith(
        f"error: {tmp_path / 'b.csv'}: Dataset columns don't match model: missing value3, value7."
    )
    assert "scoring:" not in outcome.stderr
    assert not (tmp_path / "scored").exists() and staging_folders(tmp_path / "scored") == []


def test_inputs_that_already_hold_result_columns_are_refused(
    batch: BatchCommand, scheduler_address: str, frame: pd.DataFrame, tmp_path: Path
) -> None:
    frame.assign(anomaly_score=1.0).to_parquet(tmp_path / "scored-before.parquet")
    outcome = batch.score("--input", tmp_path / "scored-before.parquet", "--output", tmp_path / "scored",
                          scheduler=scheduler_address)  # fmt: skip
    assert outcome.status == 2
    assert "already has columns anomaly_score (a scored output?)" in outcome.error_line
    assert not (tmp_path / "scored").exists()


def test_a_file_that_is_not_parquet_is_refused_naming_it(
    batch: BatchCommand, scheduler_address: str, tmp_path: Path
) -> None:
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    outcome = batch.score("--input", tmp_path / "broken.parquet", "--output", tmp_path / "scored",
                          scheduler=scheduler_address)  # fmt: skip
    assert outcome.status == 2
    assert outcome.error_line.startswith(f"error: {tmp_path / 'broken.parquet'} could not be read as PARQUET")
    assert not (tmp_path / "scored").exists()


# Refused before any cluster is started or reached: (arguments after --input, words of the error).
REFUSED_AT_ONCE = [
    (["{data}/missing.csv"], "No such file or folder: '{data}/missing.csv': check the path."),
    (["{data}/*.parquet"], "No file matches '{data}/*.parquet'"),
    (["{data}/rows.xlsx"], "{data}/rows.xlsx is not a .csv or .parquet file"),
    (["{data}/rows.csv", "--model", "Nope"], "No model at 'Nope' (No such file or directory: 'Nope/autoencoder.h5')"),
    (["{data}/rows.csv", "--output", "{data}/rows.csv"], "{data}/rows.csv is a file, not a folder"),
]


@pytest.mark.parametrize(("arguments", "words"), REFUSED_AT_ONCE)
def test_bad_inputs_are_refused_at_once_with_what_to_do(
    batch: BatchCommand, frame: pd.DataFrame, tmp_path: Path, arguments: list[str], words: str
) -> None:
    frame.to_csv(tmp_path / "rows.csv", index=False)
    (tmp_path / "rows.xlsx").write_bytes(b"")
    arguments = [argument.format(data=tmp_path) for argument in arguments]
    if "--output" not in arguments:
        arguments += ["--output", str(tmp_path / "scored")]
    outcome = batch.score("--input", *arguments)
    assert outcome.status == 2
    assert outcome.error_line.startswith(f"error: {words.format(data=tmp_path)}"), outcome.stderr
    assert not (tmp_path / "scored").exists()


def test_an_unknown_model_name_lists_the_models_there_are(batch: BatchCommand, tmp_path: Path) -> None:
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "rows.csv", index=False)
    outcome = batch.score("--input", tmp_path / "rows.csv", "--output", tmp_path / "scored", "--model", "Nope")
    assert outcome.status == 2
    assert f"the name of one under MODELS_DIR ({batch.models}: AutoEncoder)" in outcome.error_line


@pytest.mark.parametrize(
    ("option", "words"),
    [
        (["--partition-rows", "0"], "argument --partition-rows: 0 is not between 1 and 1,000,000"),
        (["--partition-rows", "2000000"], "argument --partition-rows: 2,000,000 is not between 1 and 1,000,000"),
        (["--threshold-percentile", "100"], "argument --threshold-percentile: 100 is not above 0 and below 100"),
        (["--workers", "0"], "argument --workers: 0 is not between 1 and 64"),
        (["--workers", "2", "--scheduler", "tcp://127.0.0.1:8786"], "not allowed with argument"),
        (["--connect-timeout", "nan"], "argument --connect-timeout: nan is not above 0 and at most 300"),
    ],
)
def test_options_out_of_bounds_are_usage_errors(
    batch: BatchCommand, tmp_path: Path, option: list[str], words: str
) -> None:
    outcome = batch.score("--input", tmp_path / "rows.csv", "--output", tmp_path / "scored", *option)
    assert outcome.status == 2
    assert words in outcome.stderr.splitlines()[-1]


def test_an_unreachable_scheduler_fails_fast_naming_the_address(batch: BatchCommand, tmp_path: Path) -> None:
    pd.DataFrame({"a": [1]}).to_csv(tmp_path / "rows.csv", index=False)
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        address = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    started = time.monotonic()
    outcome = batch.score("--input", tmp_path / "rows.csv", "--output", tmp_path / "scored",
                          "--connect-timeout", "2", scheduler=address)  # fmt: skip
    assert outcome.status == 2
    assert outcome.error_line.startswith(f"error: Cannot reach the Dask scheduler at {address} within 2 s")
    assert "check the address and that `dask scheduler` runs there" in outcome.error_line
    assert time.monotonic() - started < 30  # 2 s of connecting, plus starting Python
    assert not (tmp_path / "scored").exists()
