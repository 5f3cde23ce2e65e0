"""Where a run's tasks execute: a local Dask cluster sized to the machine, or an existing cluster's scheduler.

Workers are processes with one thread each: the detector's TensorFlow runs its own thread pool, and
processes keep one partition's memory (and one TensorFlow runtime) per worker apart.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from dask.system import CPU_COUNT
from distributed import Client, LocalCluster
from distributed.system import MEMORY_LIMIT

from app.batch.errors import BatchInputError

MAX_LOCAL_WORKERS = 64
# What one worker needs: the TensorFlow runtime with a model (about 0.9 GB) and a partition being scored.
WORKER_MEMORY_BYTES = 2 * 2**30


@dataclass(frozen=True)
class Cluster:
    """A connected client and what the summary says about where the work ran."""

    client: Client
    scheduler: str  # "local" or the scheduler's address
    workers: int

    @property
    def is_local(self) -> bool:
        """Whether this run started the cluster (and stops it at the end)."""
        return self.scheduler == "local"


def default_worker_count() -> int:
    """One worker per core, as many as the memory holds (at least one)."""
    return max(1, min(CPU_COUNT, MAX_LOCAL_WORKERS, MEMORY_LIMIT // WORKER_MEMORY_BYTES))


@contextmanager
def dask_cluster(*, scheduler: str | None, workers: int | None, connect_timeout: float) -> Iterator[Cluster]:
    """A client on a new local cluster of ``workers`` processes, or on the cluster at ``scheduler``.

    Connecting waits at most ``connect_timeout`` seconds for the scheduler and then for its first worker;
    ``BatchInputError`` says which address failed and what to do.
    """
    if scheduler is None:
        # Inherited by the worker processes: TensorFlow's start-up chatter would bury the progress line.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        count = workers or default_worker_count()
        with (
            LocalCluster(
                n_workers=count,
                threads_per_worker=1,
                processes=True,
                host="127.0.0.1",
                dashboard_address=None,
                silence_logs=logging.CRITICAL,
            ) as local,
            Client(local, set_as_default=False) as client,
        ):
            yield Cluster(client, "local", count)
        return
    try:
        client = Client(scheduler, timeout=connect_timeout, set_as_default=False)
    except Exception as error:  # refused, timed out, a bad address, or something else answering on that port
        raise BatchInputError(
            f"Cannot reach the Dask scheduler at {scheduler} within {connect_timeout:g} s ({error}): check the "
            "address and that `dask scheduler` runs there, or leave out --scheduler to run on a local cluster."
        ) from error
    with client:
        try:
            client.wait_for_workers(1, timeout=connect_timeout)
        except TimeoutError as error:
            raise BatchInputError(
                f"The Dask scheduler at {scheduler} has no workers (none joined within {connect_timeout:g} s): "
                f"start some with `dask worker {scheduler}` in this project's environment."
            ) from error
        yield Cluster(client, scheduler, len(client.scheduler_info()["workers"]))
