"""Glossary storage: one interface (`GlossaryStore`), a SQLite and a Redis implementation.

Both are blocking (call them from a thread), keep the caps of `GlossaryLimits` (glossaries_max_count is
checked and the glossary written in one atomic step: a lock around SQLite, one Lua script in Redis), and
give every glossary a version that grows on each replace (and keep its optional `label`, the DeepL API's
name of a glossary created through /v2/glossaries: set at creation, kept by replaces). Each keeps the
latest version it has read of each glossary compiled (`LatestCompiled`) and uses it only while the
store still holds that version: the Redis store reads the version from Redis on every `get` (one small
HMGET), so an edit through one replica is what the very next request on any replica applies; the
entries are fetched and compiled again only when the version (or creation time) changed.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Protocol

from model_server.errors import ServiceError
from model_server.glossary import Glossary, GlossaryLimits, normalize_entries
from model_server.state.redis_client import reachable


class GlossaryStore(Protocol):
    """What the routes and jobs use. Every method blocks; errors are ServiceError (unknown_glossary,
    glossary_exists, too_many_glossaries, normalize_entries' codes, state_unavailable)."""

    def list(self) -> list[Glossary]: ...

    def get(self, name: str) -> Glossary: ...

    def create(self, name: str, entries: dict[str, str], limits: GlossaryLimits,
               label: str | None = None) -> Glossary: ...

    def replace(self, name: str, entries: dict[str, str], limits: GlossaryLimits) -> Glossary: ...

    def delete(self, name: str) -> None: ...

    def compiled_versions(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def unknown(name: str) -> ServiceError:
    return ServiceError("unknown_glossary", f"no glossary named {name!r} (GET /v1/glossaries lists them)")


def exists(name: str) -> ServiceError:
    return ServiceError("glossary_exists", f"a glossary named {name!r} exists; PUT replaces it")


def full(count: int, limits: GlossaryLimits) -> ServiceError:
    return ServiceError("too_many_glossaries", f"{count} glossaries are stored, the most allowed "
                        f"(glossaries_max_count={limits.max_count}); delete one first")


class LatestCompiled:
    """The latest version read of each glossary, with its compiled pattern: one per glossary, never an
    accumulation of replaced versions. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_name: dict[str, Glossary] = {}

    def lookup(self, name: str, version: int, created_at: float) -> Glossary | None:
        """The compiled glossary if it is exactly that version of that creation, else None."""
        cached = self._by_name.get(name)
        if cached is not None and (cached.version, cached.created_at) == (version, created_at):
            return cached
        return None

    def remember(self, glossary: Glossary) -> Glossary:
        """Keep `glossary` unless a newer one is already kept (concurrent reads); returns it."""
        with self._lock:
            latest = self._by_name.get(glossary.name)
            if latest is None or (latest.created_at, latest.version) <= (glossary.created_at, glossary.version):
                self._by_name[glossary.name] = glossary  # replaces (frees) any older version
        return glossary

    def forget(self, name: str) -> None:
        with self._lock:
            self._by_name.pop(name, None)

    def versions(self) -> dict[str, int]:
        with self._lock:
            return {name: glossary.version for name, glossary in self._by_name.items()}


_COLUMNS = "name, entries, version, created_at, updated_at, label"


class SqliteGlossaryStore:
    """Glossaries in the service's SQLite file (`state_path`, shared with the cache and jobs)."""

    def __init__(self, path: Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=5.0, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._compiled = LatestCompiled()
        with self._lock:
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("CREATE TABLE IF NOT EXISTS glossaries (name TEXT PRIMARY KEY, entries TEXT NOT NULL, "
                             "version INTEGER NOT NULL, created_at REAL NOT NULL, updated_at REAL NOT NULL, "
                             "label TEXT)")
            columns = {row[1] for row in self._db.execute("PRAGMA table_info(glossaries)")}
            if "label" not in columns:   # a file written before labels (DeepL /v2/glossaries names) existed
                self._db.execute("ALTER TABLE glossaries ADD COLUMN label TEXT")

    def _row(self, row) -> Glossary:
        name, entries, version, created, updated, label = row
        cached = self._compiled.lookup(name, version, created)
        if cached is not None:
            return cached
        return self._compiled.remember(Glossary(name, json.loads(entries), version, created, updated, label))

    def compiled_versions(self) -> dict[str, int]:
        """The version of each glossary held in memory (one per glossary; for tests and diagnostics)."""
        return self._compiled.versions()

    def list(self) -> list[Glossary]:
        with self._lock:
            rows = self._db.execute(f"SELECT {_COLUMNS} FROM glossaries ORDER BY name").fetchall()
        return [self._row(row) for row in rows]

    def get(self, name: str) -> Glossary:
        with self._lock:
            row = self._db.execute(f"SELECT {_COLUMNS} FROM glossaries WHERE name = ?", (name,)).fetchone()
        if row is None:
            raise unknown(name)
        return self._row(row)

    def create(self, name: str, entries: dict[str, str], limits: GlossaryLimits,
               label: str | None = None) -> Glossary:
        """A new glossary; ServiceError glossary_exists, too_many_glossaries or one of normalize_entries'."""
        entries, now = normalize_entries(entries, limits), time.time()
        with self._lock:
            if self._exists(name):
                raise exists(name)
            self._check_room(limits)
            self._db.execute(f"INSERT INTO glossaries ({_COLUMNS}) VALUES (?, ?, 1, ?, ?, ?)",
                             (name, json.dumps(entries, ensure_ascii=False), now, now, label))
        return self.get(name)

    def replace(self, name: str, entries: dict[str, str], limits: GlossaryLimits) -> Glossary:
        """Replace the entries (version + 1), or create the glossary when it does not exist (within
        `limits.max_count`)."""
        entries, now = normalize_entries(entries, limits), time.time()
        payload = json.dumps(entries, ensure_ascii=False)
        with self._lock:
            if not self._exists(name):
                self._check_room(limits)
            self._db.execute(f"INSERT INTO glossaries ({_COLUMNS}) VALUES (?, ?, 1, ?, ?, NULL) ON CONFLICT(name) "
                             "DO UPDATE SET entries = excluded.entries, version = glossaries.version + 1, "
                             "updated_at = excluded.updated_at", (name, payload, now, now))
        return self.get(name)

    def _exists(self, name: str) -> bool:
        return self._db.execute("SELECT 1 FROM glossaries WHERE name = ?", (name,)).fetchone() is not None

    def _check_room(self, limits: GlossaryLimits) -> None:
        """Under the lock, so that two concurrent creations cannot both take the last place."""
        (count,) = self._db.execute("SELECT COUNT(*) FROM glossaries").fetchone()
        if count >= limits.max_count:
            raise full(count, limits)

    def delete(self, name: str) -> None:
        with self._lock:
            deleted = self._db.execute("DELETE FROM glossaries WHERE name = ?", (name,)).rowcount
            self._compiled.forget(name)
        if not deleted:
            raise ServiceError("unknown_glossary", f"no glossary named {name!r}")

    def close(self) -> None:
        with self._lock:
            self._db.close()


def open_sqlite_glossaries(path: Path) -> SqliteGlossaryStore | None:
    """The store, or None (logged) when the file cannot be opened: translation still works without it."""
    try:
        return SqliteGlossaryStore(path)
    except Exception as exc:  # noqa: BLE001
        import logging

        logging.getLogger(__name__).warning("glossary store %s unavailable (%s: %s); glossary requests get 503",
                                            path, type(exc).__name__, exc)
        return None


# Each glossary is a hash (entries as JSON, version, created_at, updated_at); the set of names is what
# glossaries_max_count counts. One script writes, so the cap check and the write are one atomic step
# whichever replica runs it: two replicas cannot both take the last place.
_WRITE = """
local names, key = KEYS[1], KEYS[2]
local name, entries, now, max_count, create_only = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local label = ARGV[6]
if redis.call('EXISTS', key) == 1 then
  if create_only == '1' then return {'exists'} end
  redis.call('HINCRBY', key, 'version', 1)
  redis.call('HSET', key, 'entries', entries, 'updated_at', now)
  return {'ok'}
end
local count = redis.call('SCARD', names)
if count >= max_count then return {'full', count} end
redis.call('HSET', key, 'entries', entries, 'version', 1, 'created_at', now, 'updated_at', now)
if label ~= '' then redis.call('HSET', key, 'label', label) end
redis.call('SADD', names, name)
return {'ok'}
"""
_DELETE = """
redis.call('SREM', KEYS[1], ARGV[1])
return redis.call('DEL', KEYS[2])
"""
_META = ("version", "created_at", "updated_at")


class RedisGlossaryStore:
    """Glossaries in the state Redis, shared by every replica. Keys: `<prefix>glossaries` (the set of
    names) and `<prefix>glossary:<name>` (a hash)."""

    def __init__(self, client, prefix: str = "model-server:") -> None:
        self._redis = client
        self._names = f"{prefix}glossaries"
        self._prefix = f"{prefix}glossary:"
        self._write = client.register_script(_WRITE)  # EVALSHA, loaded again after a Redis restart
        self._delete = client.register_script(_DELETE)
        self._compiled = LatestCompiled()

    def _key(self, name: str) -> str:
        return self._prefix + name

    def compiled_versions(self) -> dict[str, int]:
        return self._compiled.versions()

    def _from_hash(self, name: str, fields: dict[bytes, bytes]) -> Glossary:
        label = fields.get(b"label")
        return self._compiled.remember(Glossary(name, json.loads(fields[b"entries"]), int(fields[b"version"]),
                                                float(fields[b"created_at"]), float(fields[b"updated_at"]),
                                                label.decode() if label is not None else None))

    def get(self, name: str) -> Glossary:
        with reachable("glossaries"):
            version, created, _ = self._redis.hmget(self._key(name), _META)
            if version is None:
                raise unknown(name)
            cached = self._compiled.lookup(name, int(version), float(created))
            if cached is not None:
                return cached
            fields = self._redis.hgetall(self._key(name))  # one command: a consistent version and entries
        if not fields:
            raise unknown(name)  # deleted between the two reads
        return self._from_hash(name, fields)

    def list(self) -> list[Glossary]:
        with reachable("glossaries"):
            names = sorted(name.decode() for name in self._redis.smembers(self._names))
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.hgetall(self._key(name))
            hashes = pipe.execute()
        return [self._from_hash(name, fields) for name, fields in zip(names, hashes) if fields]

    def create(self, name: str, entries: dict[str, str], limits: GlossaryLimits,
               label: str | None = None) -> Glossary:
        return self._store(name, entries, limits, create_only=True, label=label)

    def replace(self, name: str, entries: dict[str, str], limits: GlossaryLimits) -> Glossary:
        """Replace the entries (version + 1), or create the glossary within `limits.max_count`."""
        return self._store(name, entries, limits, create_only=False)

    def _store(self, name: str, entries: dict[str, str], limits: GlossaryLimits, *, create_only: bool,
               label: str | None = None) -> Glossary:
        payload = json.dumps(normalize_entries(entries, limits), ensure_ascii=False)
        with reachable("glossaries"):
            outcome = self._write(keys=[self._names, self._key(name)],
                                  args=[name, payload, repr(time.time()), limits.max_count, int(create_only),
                                        label or ""])
        if outcome[0] == b"exists":
            raise exists(name)
        if outcome[0] == b"full":
            raise full(int(outcome[1]), limits)
        return self.get(name)

    def delete(self, name: str) -> None:
        with reachable("glossaries"):
            deleted = self._delete(keys=[self._names, self._key(name)], args=[name])
        self._compiled.forget(name)
        if not deleted:
            raise ServiceError("unknown_glossary", f"no glossary named {name!r}")

    def close(self) -> None:
        """The client belongs to the state (`model_server.state.RedisState` closes it)."""
