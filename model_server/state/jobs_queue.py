"""The job queue of several machines: Dramatiq's Redis broker on the state Redis (`state_url`).

A job of n texts is `ceil(n / jobs_chunk_texts)` messages `translate_chunk(job_id, index)` on the `chunks`
queue; the chunk that completes the job sends one `deliver_webhook(job_id)` on the `webhooks` queue. API
replicas only send (`send_chunks`); `model-server worker` (model_server/worker.py) consumes, giving its
handlers to `JobQueue(handlers=...)`.

What the broker guarantees, and how it is used:
- A fetched message sits in the worker's ack set until the handler returns. A worker that dies (kill -9,
  a lost machine) stops heartbeating; after `jobs_worker_heartbeat_timeout_s` the broker's maintenance
  (here on every broker command: two ZRANGEBYSCOREs when nobody is dead, so cheap) puts its unacked
  messages back on their queue, unchanged. A redelivered chunk is harmless: its result is set-if-absent.
- A handler asks for another try by raising `TryAgain` (backoff doubling from `min_backoff_s`); any other
  exception fails the message for good: the broker moves it to the queue's dead-letter set (`<queue>.XQ`,
  kept `jobs_dead_letter_ttl_s`). The handlers count tries themselves (in the job record), so a try that
  killed its worker counts too.
"""

from __future__ import annotations

import math
from typing import Callable

import dramatiq

from model_server.state.redis_client import connect, reachable

NAMESPACE = "model-server:queue"
CHUNK_QUEUE, WEBHOOK_QUEUE = "chunks", "webhooks"
MAINTENANCE_PER_MILLION = 1_000_000  # requeue dead workers' messages on every command: recovery within a poll


class TryAgain(dramatiq.Retry):
    """Raised by a handler: run this message again after the backoff (it did not spend its last try).
    A `dramatiq.Retry`, so the broker logs it as an expected retry, not as a crash."""


class GaveUp(Exception):
    """Raised by a handler after its last try: the message goes to the dead-letter queue."""


def _retry_when(retries: int, exception: BaseException) -> bool:
    return isinstance(exception, TryAgain)


class JobQueue:
    """Dramatiq's RedisBroker with the two actors. `handlers` (worker side): {"chunk": fn(job_id, index),
    "webhook": fn(job_id)}; without them the actors only send."""

    def __init__(self, settings, *, handlers: dict[str, Callable] | None = None, client=None) -> None:
        from dramatiq.brokers.redis import RedisBroker
        from dramatiq.middleware import Retries

        self.settings = settings
        self.client = client or connect(settings.state_url, settings.state_timeout_s)
        self.broker = RedisBroker(client=self.client, namespace=NAMESPACE, middleware=[Retries()],
                                  heartbeat_timeout=int(settings.jobs_worker_heartbeat_timeout_s * 1000),
                                  dead_message_ttl=int(settings.jobs_dead_letter_ttl_s * 1000),
                                  maintenance_chance=MAINTENANCE_PER_MILLION)
        handlers = handlers or {}

        def unhandled(*args):  # an API replica never consumes
            raise RuntimeError("this process does not run jobs")

        def backoff(seconds: float) -> dict:
            # dramatiq: delay = min_backoff * 2^retries, jittered; max_backoff caps it.
            return {"retry_when": _retry_when, "min_backoff": max(int(seconds * 1000), 1),
                    "max_backoff": max(int(seconds * 1000), 1) * 64}

        self.chunk_actor = dramatiq.Actor(handlers.get("chunk", unhandled), broker=self.broker,
                                          actor_name="translate_chunk", queue_name=CHUNK_QUEUE, priority=0,
                                          options=backoff(settings.jobs_retry_backoff_s))
        self.webhook_actor = dramatiq.Actor(handlers.get("webhook", unhandled), broker=self.broker,
                                            actor_name="deliver_webhook", queue_name=WEBHOOK_QUEUE, priority=0,
                                            options=backoff(settings.webhook_backoff_s))

    def split(self, total: int) -> tuple[int, int]:
        """(chunks, texts per chunk) for a job of `total` texts, by this replica's jobs_chunk_texts."""
        size = self.settings.jobs_chunk_texts
        return max(math.ceil(total / size), 1), size

    def send_chunks(self, job_id: str, count: int) -> None:
        with reachable("job queue"):
            for index in range(count):
                self.chunk_actor.send(job_id, index)

    def send_webhook(self, job_id: str) -> None:
        with reachable("job queue"):
            self.webhook_actor.send(job_id)

    def dead_letters(self, queue: str) -> list[tuple[str, list]]:
        """(actor, args) of the messages in `queue`'s dead-letter set (operators, tests)."""
        from dramatiq import Message

        with reachable("job queue"):
            raw = self.client.hvals(f"{NAMESPACE}:{queue}.XQ.msgs")
        return [(message.actor_name, list(message.args)) for message in map(Message.decode, raw)]

    def depth(self, queue: str) -> int:
        """Messages waiting on `queue` (not counting delayed retries and messages being worked on)."""
        with reachable("job queue"):
            return int(self.client.llen(f"{NAMESPACE}:{queue}"))

    def close(self) -> None:
        self.broker.close()
        self.client.close()
