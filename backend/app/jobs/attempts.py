"""One attempt at a claimed job, whatever its kind: run it under its lease, then record how it ended.

A job kind (an analysis, a training) says how to run, renew, release, requeue, fail and report; this module
says what happens when: the worker stopping puts the job back, a lost lease discards the attempt, a database
outage requeues it, a job gone or stopped ends it, any other error fails it with a reason users can act on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any, Protocol

from pymongo.errors import ConnectionFailure, PyMongoError

from app.jobs.context import Timings
from app.jobs.lease import JobStoppedError, LeaseLostError, Progress, kept

logger = logging.getLogger(__name__)

# A job interrupted this many times (its worker died each time) is failed rather than retried forever.
MAX_ATTEMPTS = 3


class JobGoneError(Exception):
    """What the job works on was deleted while it waited or ran: nothing to report, nothing to keep."""


class ReleaseJobError(Exception):
    """This worker cannot run the job after all (its model changed on disk since the claim): put it back."""


class ClaimedJob(Protocol):
    """A job this worker holds the lease of."""

    kind: str  # "analysis", "training": the word log lines and messages use
    done_outcome: str  # the outcome a completed attempt reports: "analyzed", "trained"
    job_id: str
    attempt: int
    lease_seconds: float
    queued_seconds: float | None  # how long the job waited before this claim

    def interrupted_message(self) -> str:
        """Why the job fails after ``MAX_ATTEMPTS`` interrupted attempts, and what to do."""

    async def renew(self, progress: Progress) -> bool:
        """Record progress and extend the lease (noting a request to stop); ``False`` once the lease is lost."""

    async def run(self, progress: Progress, timings: Timings) -> dict[str, Any]:
        """Do the work; what the log line of a completed attempt adds."""

    async def after_success(self) -> None:
        """Tidy up once the work is stored and reported."""

    async def release(self) -> None:
        """Put the job back in the queue, uncounted."""

    async def requeue(self) -> None:
        """Put the job back in the queue after a failure worth retrying."""

    async def discard(self) -> None:
        """Remove what is left of a job whose subject was deleted."""

    async def stop(self, reason: str, timings: Timings) -> str:
        """End a job that was asked to stop; the outcome to report."""

    async def fail(self, message: str, timings: Timings) -> None:
        """End the job as failed with ``message``."""

    def report(self, outcome: str, timings: Timings, **fields: Any) -> None:
        """Log the attempt's outcome (one structured line) and count it."""


async def run_attempt(job: ClaimedJob, timings: Timings) -> None:
    """Run one attempt of ``job`` and record how it ended."""
    progress = Progress()
    try:
        if job.attempt > MAX_ATTEMPTS:
            raise RuntimeError(job.interrupted_message())
        async with kept(job.renew, job.lease_seconds, progress):
            fields = await job.run(progress, timings)
    except asyncio.CancelledError:
        await asyncio.shield(job.release())
        logger.info("%s %s put back in the queue: this worker is stopping", job.kind.capitalize(), job.job_id)
        raise
    except LeaseLostError:
        logger.warning("%s %s was taken over or deleted while this worker ran it: discarded", job.kind, job.job_id)
        job.report("discarded", timings)
    except JobGoneError:
        await job.discard()
        job.report("discarded", timings)
    except JobStoppedError as stopped:
        job.report(await job.stop(str(stopped), timings), timings, error=str(stopped))
    except ReleaseJobError:
        await job.release()
        job.report("released", timings)
    except ConnectionFailure as error:
        # The database went away mid-job: nothing is wrong with the job, so try again. If it cannot even be put
        # back now, its lease runs out and it is claimed once the database is back.
        logger.warning(
            "%s %s interrupted, to be retried: the database is unreachable (%s)", job.kind, job.job_id, error
        )
        job.report("retried", timings, error=f"database unreachable ({type(error).__name__})")
        with contextlib.suppress(PyMongoError):
            await job.requeue()
    except Exception as error:
        logger.error("%s %s failed", job.kind.capitalize(), job.job_id, exc_info=error)
        message = user_message(error, job.kind)
        job.report("failed", timings, error=message)
        with contextlib.suppress(PyMongoError):
            await job.fail(message, timings)
    else:
        job.report(job.done_outcome, timings, **fields)
        await job.after_success()


def user_message(error: Exception, kind: str) -> str:
    """What a failed job tells its user: the error's own words when they are written for users."""
    if isinstance(error, ValueError | RuntimeError):
        return str(error)
    return f"Internal error in this {kind} ({type(error).__name__}): see the worker's log, then try again."
