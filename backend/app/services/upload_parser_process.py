"""A child process that parses uploads: ``python -m app.services.upload_parser_process --memory-mb N``.

Started and fed by ``app.services.upload_parsing``. It limits its own address space, then reads one JSON
request a line from stdin (the upload's path, its name, where to write the parsed table, the read limits)
and answers one JSON line on its own copy of stdout (stdout itself goes to
stderr, so a library's print can never corrupt an answer). The readers are imported when the child starts,
in the background of the API, not when the first upload arrives. A file that makes a parser allocate past the
limit ends in a MemoryError answered like any unreadable file, or kills only this process; the API sees its
pipe close and answers 400.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import resource
import signal
import sys
from pathlib import Path
from typing import Any

from app.services.table_snapshot import TableSnapshotWriter
from app.utils.table_reader import ReadLimits, TableChunks, TableReadError

HASH_BLOCK_BYTES = 2**20

logger = logging.getLogger("app.upload_parser")


def parse_upload(path: Path, filename: str, table_path: Path, limits: dict[str, int]) -> dict[str, Any]:
    """Hash and parse the upload at ``path``, write its table snapshot to ``table_path``; describe both."""
    digest = hashlib.sha256()
    with open(path, "rb") as upload:
        while block := upload.read(HASH_BLOCK_BYTES):
            digest.update(block)
        size = upload.tell()
    reading = TableChunks(path, filename, limits=ReadLimits(**limits))
    snapshot = TableSnapshotWriter()
    for chunk in reading:
        snapshot.add(chunk)
    with open(table_path, "wb") as table:
        snapshot.finish(table)
    return {
        "sha256": digest.hexdigest(),
        "size": size,
        "columns": snapshot.columns,
        "row_count": snapshot.row_count,
        "notes": reading.notes,
    }


def answer(request: dict[str, Any]) -> dict[str, Any]:
    """The answer to one request: the parsed upload, or the reason it cannot be read, in a user's words."""
    filename = request["filename"]
    try:
        parsed = parse_upload(Path(request["path"]), filename, Path(request["table_path"]), request["limits"])
        return {"ok": True, **parsed}
    except TableReadError as error:
        return {"ok": False, "error": str(error)}
    except MemoryError:
        return {"ok": False, "error": out_of_memory_message(filename, request["memory_mb"])}
    except Exception as error:  # a parser's own failure on a strange file: the file is unreadable, not the service
        logger.exception("Parsing %r failed", filename)
        return {
            "ok": False,
            "error": f"{Path(filename).name!r} could not be read as a table ({type(error).__name__}): save it "
            "again with a spreadsheet program, or export it as CSV.",
        }


def out_of_memory_message(filename: str, memory_mb: int) -> str:
    """What a user is told when reading their file needed more memory than a parser may use, or crashed it."""
    return (
        f"{Path(filename).name!r} could not be read within the {memory_mb:,} MB a parser may use (a damaged or "
        "unusually dense file, or one that crashes the reader): save it again with a spreadsheet program as "
        ".xlsx, or export it as CSV. The operator can raise PARSE_MEMORY_MB."
    )


def main(argv: list[str] | None = None) -> int:
    """Serve parse requests until stdin closes."""
    arguments = argparse.ArgumentParser(prog="python -m app.services.upload_parser_process")
    arguments.add_argument("--memory-mb", type=int, required=True)
    memory_mb = arguments.parse_args(argv).memory_mb
    limit = memory_mb * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    # Ctrl-C in a terminal reaches the whole process group: the API stops its parsers itself.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    answers = os.fdopen(os.dup(sys.stdout.fileno()), "w", encoding="utf-8")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for line in sys.stdin:
        request = json.loads(line)
        reply = answer({**request, "memory_mb": memory_mb})
        reply["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        answers.write(json.dumps(reply) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
