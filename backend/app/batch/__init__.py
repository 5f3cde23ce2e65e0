"""Batch scoring of large tables on Dask distributed: ``python -m app.batch score`` (run from ``backend/``).

CSV and Parquet files (local paths, globs, folders, or fsspec URLs) are cut into partitions of a bounded number
of rows, scored on a Dask cluster (a local one sized to the machine, or an existing one) with the model loaded
once per worker, and written as Parquet parts with ``anomaly_score``, ``is_anomaly`` and ``top_feature`` added,
plus a ``_summary.json``. The output folder appears only when the run is complete.

- ``inputs``: finding the files, cutting them into partitions, reading one partition;
- ``csv_layout``: where a CSV file's records end, so it can be cut between rows;
- ``model``: which model folder to use, and the worker plugin that loads it once per worker;
- ``scoring``: scoring one partition and writing its part;
- ``output``: the output folder: refusing to clobber, one schema for every part, the summary;
- ``cluster``: a local cluster or a connection to an existing scheduler;
- ``job``: one run from inputs to the committed output; ``progress``: the progress line; ``__main__``: the CLI.

Importing this package stays free of TensorFlow and Dask: workers import TensorFlow when they load the model.
"""
