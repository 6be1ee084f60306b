"""Threads and bounded queues for a staged pipeline: each stage is a function run on its own
thread, reading one queue and writing the next; a full queue blocks its writer, so memory
stays flat and a slow stage throttles the ones before it. The first error in any thread stops
them all and is raised again in the caller's thread by :meth:`Pipeline.raise_error`.
"""

from __future__ import annotations

import queue
import threading
from typing import Any, Callable, List, Optional

__all__ = ["Pipeline", "Stopped", "END"]

END = object()  # put after a stage's last item


class Stopped(Exception):
    """Raised inside a stage when the pipeline is shutting down."""


class Pipeline:
    """Stage threads sharing one stop flag. ``put`` / ``get`` wait on a queue, but give up
    with :class:`Stopped` as soon as the pipeline stops."""

    def __init__(self):
        self.stop = threading.Event()
        self.error: Optional[BaseException] = None
        self.threads: List[threading.Thread] = []

    def put(self, q: "queue.Queue", item: Any) -> None:
        while True:
            if self.stop.is_set():
                raise Stopped()
            try:
                q.put(item, timeout=0.05)
                return
            except queue.Full:
                continue

    def put_latest(self, q: "queue.Queue", item: Any) -> int:
        """Put without waiting: while ``q`` is full, drop its oldest item (a live source:
        stale frames are useless). Returns how many items were dropped."""
        dropped = 0
        while True:
            if self.stop.is_set():
                raise Stopped()
            try:
                q.put_nowait(item)
                return dropped
            except queue.Full:
                try:
                    q.get_nowait()
                    dropped += 1
                except queue.Empty:
                    pass

    def get(self, q: "queue.Queue") -> Any:
        while True:
            if self.stop.is_set():
                raise Stopped()
            try:
                return q.get(timeout=0.05)
            except queue.Empty:
                continue

    def spawn(self, fn: Callable[[], None], name: str) -> None:
        """Run ``fn`` on a daemon thread; its exception (other than :class:`Stopped`) stops
        the pipeline and is kept for :meth:`raise_error`."""
        def target():
            try:
                fn()
            except Stopped:
                pass
            except BaseException as exc:  # handed to the caller's thread
                if self.error is None:
                    self.error = exc
                self.stop.set()

        thread = threading.Thread(target=target, name=f"yolact-{name}", daemon=True)
        thread.start()
        self.threads.append(thread)

    def shutdown(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def raise_error(self) -> None:
        if self.error is not None:
            raise self.error
