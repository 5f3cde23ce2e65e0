"""The output folder's rules and its parts' columns (pure functions: no cluster, no model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.batch.errors import BatchInputError
from app.batch.output import check_output, conform_part, unified_schema
from app.batch.scoring import top_features, with_results


def test_a_new_or_empty_folder_is_a_valid_output(tmp_path: Path) -> None:
    assert check_output(str(tmp_path / "new" / "scored"), overwrite=False) == tmp_path / "new" / "scored"
    (tmp_path / "empty").mkdir()
    assert check_output(f"file://{tmp_path}/empty", overwrite=False) == tmp_path / "empty"


def test_a_complete_result_is_replaced_only_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "scored").mkdir()
    (tmp_path / "scored" / "_summary.json").write_text("{}")
    with pytest.raises(BatchInputError, match="already holds a complete result .*pass --overwrite"):
        check_output(str(tmp_path / "scored"), overwrite=False)
    assert check_output(str(tmp_path / "scored"), overwrite=True) == tmp_path / "scored"


def test_a_file_is_never_replaced_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "scored").write_text("x")
    with pytest.raises(BatchInputError, match="is a file, not a folder"):
        check_output(str(tmp_path / "scored"), overwrite=True)


def test_a_folder_of_other_files_is_never_replaced_even_with_overwrite(tmp_path: Path) -> None:
    (tmp_path / "scored").mkdir()
    (tmp_path / "scored" / "mine.txt").write_text("x")
    with pytest.raises(BatchInputError, match="holds other files, not a scoring result"):
        check_output(str(tmp_path / "scored"), overwrite=True)


def test_a_remote_output_is_refused_with_what_to_use() -> None:
    with pytest.raises(BatchInputError, match="must be a local folder .* that every worker can write to"):
        check_output("s3://bucket/scored", overwrite=False)


def test_parts_with_differing_column_types_get_one_schema_that_holds_each() -> None:
    score = ("anomaly_score", pa.float64())
    first = pa.schema([("n", pa.int64()), ("x", pa.float64()), ("t", pa.large_string()), score])
    second = pa.schema([("n", pa.float64()), ("x", pa.null()), ("t", pa.timestamp("ns")), ("extra", pa.int8()), score])
    schema = unified_schema([first, second])
    assert schema.names == ["n", "x", "t", "extra", "anomaly_score"]
    assert schema.types == [pa.float64(), pa.float64(), pa.large_string(), pa.int8(), pa.float64()]
    assert unified_schema([pa.schema([("t", pa.timestamp("us"))]), pa.schema([("t", pa.timestamp("ns"))])]).types == [
        pa.timestamp("ns")
    ]


def test_a_part_is_rewritten_in_the_common_schema_with_its_values(tmp_path: Path) -> None:
    path = tmp_path / "part-000000.parquet"
    pq.write_table(pa.table({"n": [1, 2], "t": ["a", None]}), path)
    schema = pa.schema([("n", pa.float64()), ("t", pa.large_string()), ("extra", pa.int64())])
    conform_part(str(path), schema)
    table = pq.read_table(path)
    assert table.schema == schema
    assert table.to_pylist() == [{"n": 1.0, "t": "a", "extra": None}, {"n": 2.0, "t": None, "extra": None}]


def test_the_top_feature_is_the_column_with_the_largest_error_and_none_without_error() -> None:
    errors = np.array([[0.1, 0.5, 0.2], [0.0, 0.0, 0.0], [0.3, 0.3, 0.1]])
    assert top_features(errors, ["a", "b", "c"]).tolist() == ["b", None, "a"]


def test_results_are_appended_with_their_types_and_without_the_inputs_pandas_metadata() -> None:
    table = pa.Table.from_pandas(pd.DataFrame({"v": [1.5, 2.5]}), preserve_index=False)
    scored = with_results(table, np.array([0.5, 3.0]), np.array([False, True]), np.array([None, "v"], dtype=object))
    assert scored.schema == pa.schema(
        [("v", pa.float64()), ("anomaly_score", pa.float64()), ("is_anomaly", pa.bool_()), ("top_feature", pa.string())]
    )
    assert scored.schema.metadata is None
    assert scored.column("top_feature").to_pylist() == [None, "v"]
