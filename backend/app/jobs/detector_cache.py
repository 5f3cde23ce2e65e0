"""The detectors a job worker has loaded, by model version, least recently used evicted past a bound.

Loading is the only place a worker imports TensorFlow (on first use). A deployment model loads from its
folder; a user's model from its files in GridFS, through a temporary folder.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from app.utils.anomaly_detector import TabularAnomalyDetector

logger = logging.getLogger(__name__)

Loader = Callable[[], Awaitable[TabularAnomalyDetector]]


class DetectorCache:
    """At most ``capacity`` loaded detectors, by version; one load at a time per version."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._detectors: OrderedDict[str, TabularAnomalyDetector] = OrderedDict()
        self._loading: dict[str, asyncio.Lock] = {}
        self.loads = 0

    async def get(self, version: str, load: Loader) -> TabularAnomalyDetector:
        """The detector of ``version``, loaded with ``load`` if it is not in the cache."""
        lock = self._loading.setdefault(version, asyncio.Lock())
        async with lock:
            detector = self._detectors.get(version)
            if detector is None:
                detector = await load()
                self.loads += 1
                self._detectors[version] = detector
                while len(self._detectors) > self.capacity:
                    evicted, _ = self._detectors.popitem(last=False)
                    logger.info("Model version %s evicted from this worker's cache", evicted)
            self._detectors.move_to_end(version)
            return detector

    def versions(self) -> list[str]:
        """The versions loaded now, least recently used first."""
        return list(self._detectors)
