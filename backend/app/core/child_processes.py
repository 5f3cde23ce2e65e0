"""Child processes the launcher starts (the embedded database, job workers) and how they end with it."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable

_PR_SET_PDEATHSIG = 1


def _terminate_with_parent() -> None:
    """In the child, before exec: ask Linux to send SIGTERM when the launcher dies, however it dies."""
    ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def ends_with_parent() -> Callable[[], None] | None:
    """The ``preexec_fn`` that makes a child end when its parent dies (Linux; elsewhere none)."""
    return _terminate_with_parent if sys.platform == "linux" else None
