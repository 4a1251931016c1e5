"""The engine thread: takes submitted jobs, admits them as rows free up, steps the batch, writes images.

Generation never runs on the event loop: ``submit`` only queues a job. The thread admits every waiting job
that fits (``BatchEngine.free``) before each decoding step, so requests that arrive while others are being
decoded join the running batch (continuous batching). A failure inside a step fails the jobs then running
(500) and the thread goes on serving.
"""
from __future__ import annotations

import logging
import queue
import threading
from collections import deque

from .engine import BatchEngine
from .image_outputs import image_writer
from .job import Job

log = logging.getLogger("vlbridge.serve")


class Scheduler:
    def __init__(self, model, max_batch: int = 32):
        self.model = model
        self.writer = image_writer(model)
        self.engine = BatchEngine(model, model.builder.stop_token_ids(),
                                  self.writer.processors if self.writer else (), max_batch)
        self.inbox: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self.waiting: deque[Job] = deque()
        self.image_jobs: list[Job] = []
        self.peak_batch = 0                      # most rows decoded together so far
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="vlbridge-engine", daemon=True)

    def start(self) -> "Scheduler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def submit(self, job: Job) -> None:
        self.inbox.put(job)

    @property
    def running(self) -> int:
        return len(self.engine.rows)

    def _idle(self) -> bool:
        return not (self.engine.rows or self.waiting or self.image_jobs)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.waiting.append(self.inbox.get(timeout=0.05) if self._idle() else self.inbox.get_nowait())
            except queue.Empty:
                pass
            while True:
                try:
                    self.waiting.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            try:
                self._tick()
            except Exception as e:                # keep serving: fail what was running, start clean
                log.exception("generation step failed")
                for row in self.engine.rows:
                    row.req.sink.fail(e)
                for job in self.image_jobs:
                    job.fail(e)
                self.engine.rows, self.engine.cache, self.engine.mask = [], None, None
                self.image_jobs.clear()

    def _tick(self) -> None:
        self.engine.sweep()
        admitted = []
        while self.waiting and len(admitted) < self.engine.free:
            job = self.waiting.popleft()
            if job.request.cancelled:
                continue
            try:
                job.prepare(self.model, self.writer.end_ids if self.writer else (), self.image_jobs)
            except Exception as e:
                job.fail(e)
                continue
            admitted.append(job.request)
        if admitted:
            self.engine.admit(admitted)
        self.peak_batch = max(self.peak_batch, len(self.engine.rows))
        self.engine.step()
        if self.image_jobs:
            jobs, self.image_jobs[:] = list(self.image_jobs), []
            live = [j for j in jobs if not j.request.cancelled]
            if live:
                for job, (image, n_tokens) in zip(live, self.writer.write([j.image_job() for j in live])):
                    job.done("stop", [image], n_tokens)
