"""Job records in Redis (`state_url`): the shared twin of `model_server.jobs.JobStore` (SQLite), so a job
submitted through one replica is read, listed and cancelled through any other.

Both stores offer the same record operations (`create`, `get`, `page`, `cancel`, `finish`, `expire`,
`close`) and return a job as the same dict (the SQLite row's columns), so `model_server.jobs` renders and
guards them alike (`public_view`, `Caller.may_see`). The Redis one adds what chunked jobs need: `start_chunk`
(counts each chunk's tries), `store_chunk` (set-if-absent per chunk index) and `chunks`.

Keys, under `PREFIX`:
- `job:<id>`: hash of the record's fields; an absent or empty field is NULL.
- `key:<owner>\\n<Idempotency-Key>`: the job id holding that key; created atomically with the record by one
  Lua script, so the same key sent to two replicas at once makes one job.
- `owner:<owner>`: sorted set of the owner's job ids by created_at (listing); `finished`: ids by finished_at
  (retention).
- `job:<id>:document`: a document job's original file (the record's `document` field describes it).
- `job:<id>:chunks`: hash chunk index -> {"results", "model", "failed"} (HSETNX: a redelivered chunk never
  writes twice); `job:<id>:tries`: hash chunk index -> runs started.
Every command runs under `redis_client.reachable`: an outage is 503 state_unavailable, never a crash.
"""

from __future__ import annotations

import json
import time
import uuid

from model_server.errors import ServiceError
from model_server.state.redis_client import connect, reachable

PREFIX = "model-server:jobs:"
FINISHED = ("done", "failed", "cancelled")
_INTS = ("done", "total", "attempts", "callback_attempts", "chunks", "chunk_texts", "enqueued")
_FLOATS = ("created_at", "updated_at")
_NULLABLE = ("request_key", "result", "error", "callback_url", "callback_status", "finished_at", "document")

# KEYS: idempotency key (or the job key when there is none), job, owner index.
# ARGV: has_key ("1"/"0"), job id, created_at, field/value pairs. -> {created (0/1), job id}
_CREATE = """
if ARGV[1] == "1" then
  local existing = redis.call("GET", KEYS[1])
  if existing then return {0, existing} end
  redis.call("SET", KEYS[1], ARGV[2])
end
redis.call("HSET", KEYS[2], unpack(ARGV, 4))
redis.call("ZADD", KEYS[3], ARGV[3], ARGV[2])
return {1, ARGV[2]}
"""
# KEYS: job. ARGV: allowed statuses (comma-separated), field/value pairs. -> 1 when changed, else 0.
_TRANSITION = """
local status = redis.call("HGET", KEYS[1], "status")
if not status then return 0 end
for allowed in string.gmatch(ARGV[1], "[^,]+") do
  if allowed == status then
    redis.call("HSET", KEYS[1], unpack(ARGV, 2))
    return 1
  end
end
return 0
"""
# KEYS: job, tries. ARGV: chunk index, now. -> this run's try number, or -1 when the job no longer runs.
_START_CHUNK = """
local status = redis.call("HGET", KEYS[1], "status")
if status == "queued" then
  redis.call("HSET", KEYS[1], "status", "running", "updated_at", ARGV[2])
elseif status ~= "running" then
  return -1
end
local tries = redis.call("HINCRBY", KEYS[2], ARGV[1], 1)
if tries > tonumber(redis.call("HGET", KEYS[1], "attempts") or "0") then
  redis.call("HSET", KEYS[1], "attempts", tries)
end
return tries
"""
# KEYS: job, chunks. ARGV: chunk index, chunk json, texts in the chunk, now.
# -> -1 the job no longer runs (nothing written); else how many chunks are stored.
_STORE_CHUNK = """
if redis.call("HGET", KEYS[1], "status") ~= "running" then return -1 end
if redis.call("HSETNX", KEYS[2], ARGV[1], ARGV[2]) == 1 then
  redis.call("HINCRBY", KEYS[1], "done", ARGV[3])
  redis.call("HSET", KEYS[1], "updated_at", ARGV[4])
end
return redis.call("HLEN", KEYS[2])
"""


def _unknown(job_id: str) -> ServiceError:
    return ServiceError("unknown_job", f"no job {job_id!r}")


def _decode(raw: dict[bytes, bytes]) -> dict:
    job: dict = {key.decode(): value.decode() for key, value in raw.items()}
    for name in _NULLABLE:
        job[name] = job.get(name) or None
    for name in _INTS:
        job[name] = int(job.get(name) or 0)
    for name in _FLOATS:
        job[name] = float(job[name])
    if job["finished_at"] is not None:
        job["finished_at"] = float(job["finished_at"])
    return job


def _pairs(fields: dict) -> list:
    """HSET arguments; None is stored as the empty string (read back as NULL)."""
    flat: list = []
    for name, value in fields.items():
        flat += [name, "" if value is None else value]
    return flat


class RedisJobStore:
    """Job records shared by every replica (see the module docstring for the keys)."""

    def __init__(self, url: str, timeout_s: float, *, client=None) -> None:
        self.client = client or connect(url, timeout_s)
        self._create = self.client.register_script(_CREATE)
        self._transition_script = self.client.register_script(_TRANSITION)
        self._start_chunk = self.client.register_script(_START_CHUNK)
        self._store_chunk = self.client.register_script(_STORE_CHUNK)

    @staticmethod
    def _job(job_id: str) -> str:
        return f"{PREFIX}job:{job_id}"

    @staticmethod
    def _idempotency(owner: str, request_key: str) -> str:
        return f"{PREFIX}key:{owner}\n{request_key}"

    def create(self, caller, request: dict, total: int, callback_url: str | None, request_key: str | None, *,
               chunks: int = 0, chunk_texts: int = 0, document=None) -> tuple[dict, bool]:
        """(job, created), as `JobStore.create`: a key this owner already used returns that job when the
        request is the same, else idempotency_mismatch. Atomic across replicas (one Lua script). The record
        keeps how it was split (`chunks` of `chunk_texts`): workers follow it, whatever their own settings."""
        from model_server.jobs import request_digest

        job_id, now, digest = uuid.uuid4().hex, time.time(), request_digest(request, callback_url)
        fields = {"id": job_id, "owner": caller.owner, "request_key": request_key, "request_hash": digest,
                  "status": "queued", "request": json.dumps(request, ensure_ascii=False), "done": 0, "total": total,
                  "callback_url": callback_url, "callback_status": "pending" if callback_url else None,
                  "callback_attempts": 0, "attempts": 0, "chunks": chunks, "chunk_texts": chunk_texts, "enqueued": 0,
                  "created_at": repr(now), "updated_at": repr(now),
                  # A document job: its description here; the bytes by put_document (QueuedJobManager.submit).
                  "document": json.dumps(document.about, ensure_ascii=False) if document is not None else None}
        job_key = self._job(job_id)
        with reachable("job store"):
            created, found = self._create(
                keys=[self._idempotency(caller.owner, request_key) if request_key else job_key, job_key,
                      f"{PREFIX}owner:{caller.owner}"],
                args=["1" if request_key else "0", job_id, repr(now), *_pairs(fields)])
        found = found.decode()
        if created:
            return self.get(found), True
        existing = self.get(found)
        if existing["request_hash"] != digest:
            raise ServiceError("idempotency_mismatch", f"Idempotency-Key {request_key!r} was used for another "
                               "request (its body differs); use a new key for a new request")
        return existing, False

    def get(self, job_id: str) -> dict:
        with reachable("job store"):
            raw = self.client.hgetall(self._job(job_id))
        if not raw:
            raise _unknown(job_id)
        return _decode(raw)

    def put_document(self, job_id: str, data: bytes) -> None:
        with reachable("job store"):
            self.client.set(self._job(job_id) + ":document", data)

    def get_document(self, job_id: str) -> bytes | None:
        """A document job's original file (None: not a document job, or expired)."""
        with reachable("job store"):
            return self.client.get(self._job(job_id) + ":document")

    def page(self, owner: str, limit: int, before: tuple[float, str] | None) -> list[dict]:
        """`owner`'s jobs, newest first, strictly older than `before` (created_at, id)."""
        top = "+inf" if before is None else repr(before[0])
        with reachable("job store"):
            ids = self.client.zrevrangebyscore(f"{PREFIX}owner:{owner}", top, "-inf", start=0,
                                               num=limit + 50, withscores=True)  # + same-instant ties skipped below
            jobs = []
            for raw_id, created_at in ids:
                job_id = raw_id.decode()
                if before is not None and (created_at, job_id) >= before:
                    continue
                raw = self.client.hgetall(self._job(job_id))
                if raw:
                    jobs.append(_decode(raw))
                if len(jobs) == limit:
                    break
        return jobs

    def _transition(self, job_id: str, from_statuses: tuple[str, ...], **fields) -> bool:
        fields["updated_at"] = repr(time.time())
        with reachable("job store"):
            return self._transition_script(keys=[self._job(job_id)],
                                           args=[",".join(from_statuses), *_pairs(fields)]) == 1

    def finish(self, job_id: str, status: str, *, result: dict | None = None, error: dict | None = None) -> bool:
        now = time.time()
        changed = self._transition(job_id, ("running",), status=status, finished_at=repr(now),
                                   result=json.dumps(result, ensure_ascii=False) if result is not None else None,
                                   error=json.dumps(error) if error is not None else None)
        if changed:
            with reachable("job store"):
                self.client.zadd(f"{PREFIX}finished", {job_id: now})
        return changed

    def cancel(self, job_id: str) -> bool:
        """queued | running -> cancelled; its webhook will not be sent, its chunks not written."""
        job = self.get(job_id)
        now = time.time()
        changed = self._transition(job_id, ("queued", "running"), status="cancelled", finished_at=repr(now),
                                   callback_status="not_sent" if job["callback_url"] else None)
        if changed:
            with reachable("job store"):
                self.client.zadd(f"{PREFIX}finished", {job_id: now})
        return changed

    # ----- chunks (model_server/worker.py) -----
    def start_chunk(self, job_id: str, index: int) -> int:
        """Count a run of chunk `index` (the job becomes running); its try number, or -1 when the job was
        cancelled, finished or is gone."""
        with reachable("job store"):
            return int(self._start_chunk(keys=[self._job(job_id), self._job(job_id) + ":tries"],
                                         args=[index, repr(time.time())]))

    def store_chunk(self, job_id: str, index: int, chunk: dict, texts: int) -> int:
        """Write chunk `index` unless already written; how many chunks the job has stored (-1: the job no
        longer runs, nothing written)."""
        with reachable("job store"):
            return int(self._store_chunk(keys=[self._job(job_id), self._job(job_id) + ":chunks"],
                                         args=[index, json.dumps(chunk, ensure_ascii=False), texts,
                                               repr(time.time())]))

    def chunks(self, job_id: str) -> list[dict]:
        """The stored chunks in index order."""
        with reachable("job store"):
            raw = self.client.hgetall(self._job(job_id) + ":chunks")
        return [json.loads(raw[key]) for key in sorted(raw, key=int)]

    def mark_enqueued(self, job_id: str) -> None:
        """Its chunk messages are on the queue (until then a replay of its Idempotency-Key sends them)."""
        with reachable("job store"):
            self.client.hset(self._job(job_id), "enqueued", 1)

    def record_delivery(self, job_id: str, attempts: int, status: str) -> None:
        with reachable("job store"):
            self.client.hset(self._job(job_id), mapping={"callback_attempts": attempts, "callback_status": status})

    def claim_delivery(self, job_id: str, lease_s: float) -> bool:
        """One deliverer at a time per job (a duplicate webhook message waits its turn): a lease, not a lock
        that a dead worker could hold forever."""
        with reachable("job store"):
            return bool(self.client.set(self._job(job_id) + ":delivering", "1", nx=True,
                                        px=max(int(lease_s * 1000), 1)))

    def release_delivery(self, job_id: str) -> None:
        with reachable("job store"):
            self.client.delete(self._job(job_id) + ":delivering")

    def expire(self, now: float, retention_s: float) -> None:
        """As `JobStore.expire`: finished jobs older than the retention lose request, result and chunks
        (-> expired; the Idempotency-Key is freed); expired ones older than twice the retention are deleted."""
        with reachable("job store"):
            for raw_id in self.client.zrangebyscore(f"{PREFIX}finished", "-inf", repr(now - retention_s)):
                job_id = raw_id.decode()
                raw = self.client.hgetall(self._job(job_id))
                if not raw:
                    self.client.zrem(f"{PREFIX}finished", job_id)
                    continue
                job = _decode(raw)
                if job["status"] in FINISHED:
                    if job["request_key"]:
                        self.client.delete(self._idempotency(job["owner"], job["request_key"]))
                    self.client.delete(self._job(job_id) + ":chunks", self._job(job_id) + ":tries",
                                       self._job(job_id) + ":document")
                    self._transition(job_id, FINISHED, status="expired", request="", result=None, request_key=None)
                elif job["status"] == "expired" and job["finished_at"] < now - 2 * retention_s:
                    self.client.delete(self._job(job_id))
                    self.client.zrem(f"{PREFIX}owner:{job['owner']}", job_id)
                    self.client.zrem(f"{PREFIX}finished", job_id)

    def close(self) -> None:
        self.client.close()
