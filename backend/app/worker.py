"""A job worker: ``python -m app.worker`` claims and runs the analyses (and trainings) queued in MongoDB.

Any number of workers can run, on any host, against one MongoDB (``MONGODB_URL``): each job runs once, and a
job whose worker dies is taken up by another once its lease runs out. ``make run`` (``python -m app.serve``)
starts one beside the API. SIGTERM or Ctrl-C stops a worker: a job in progress goes back to the queue.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import logging.config
import os
import signal
import sys

from app.core.config import Settings, get_settings
from app.core.errors import ConfigurationError
from app.core.structured_log import log_config
from app.db.connection import WORKER_APP_NAME, connected
from app.jobs.runner import JobWorker
from app.services.model_registry import ModelRegistry

logger = logging.getLogger("app.worker")


def main(argv: list[str] | None = None) -> int:
    """Run a worker until it is told to stop; returns the process exit status."""
    parser = argparse.ArgumentParser(prog="python -m app.worker", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--metrics-port", type=int, default=None,
        help="serve this worker's Prometheus metrics on 127.0.0.1:PORT (a worker started by the launcher adds its "
        "metrics to the API's /metrics instead)",
    )  # fmt: skip
    arguments = parser.parse_args(argv)
    logging.config.dictConfig(log_config())
    # TensorFlow's C++ start-up chatter (CPU features, XLA) is noise in a service log; warnings still show.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if arguments.metrics_port is not None:
        from prometheus_client import start_http_server

        start_http_server(arguments.metrics_port, addr="127.0.0.1")
    try:
        asyncio.run(_work(get_settings()))
    except ConfigurationError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


async def _work(settings: Settings) -> None:
    async with connected(settings, WORKER_APP_NAME) as (_, database):
        registry = await asyncio.to_thread(ModelRegistry.load, settings)
        worker = JobWorker(database, settings, registry)
        task = asyncio.create_task(worker.run(), name="job-worker")
        loop = asyncio.get_running_loop()
        for stop_signal in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(stop_signal, task.cancel)
        logger.info("Job worker %s started", worker.worker_id)
        try:
            await task
        except asyncio.CancelledError:
            logger.info("Job worker %s stopped", worker.worker_id)


if __name__ == "__main__":
    sys.exit(main())
