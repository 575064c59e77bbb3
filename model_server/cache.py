"""Sentence-level translation cache: a re-sent article only translates the segments that changed.

A cache entry maps (model identity, decoding options, one model input segment) to the final chosen model
output for that segment (after any quality retry). The key is a SHA-256 over:
  - the model identity: configured name, loaded source, backend, dtype/compute type and a fingerprint
    of the weights (CTranslate2: the conversion's source fingerprint; a local directory: names, sizes and
    modification times of its files), so a different or updated model never reads old entries;
  - every field of `GenerationOptions` (beam size, max_new_tokens, ...);
  - `CACHE_FORMAT` (bumped when what is stored changes) and an optional context string (e.g. a glossary
    version) from the caller;
  - the segment text exactly as the model sees it (already normalized by the pipeline).

Stores: `SQLiteCache` (default; one file, WAL mode, survives restarts, bounded by `cache_max_entries` with
least-recently-used eviction) and `RedisCache` (`cache_url=redis://...`; the `redis` package is an optional
extra, imported only then; Redis' own maxmemory policy bounds it). `TranslationCache` wraps a store: all
store I/O runs on one worker thread, off the event loop, and any store failure is logged, counted
(`errors`) and answered as misses - the cache never turns into an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

from model_server.backends.base import Generated, GenerationOptions, ModelInfo

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
_SQLITE_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class CachedOutput:
    """What is stored per segment: the chosen output and whether it came from a quality retry."""

    generated: Generated
    retried: bool = False

    def dumps(self) -> str:
        return json.dumps({**asdict(self.generated), "retried": self.retried}, ensure_ascii=False)

    @classmethod
    def loads(cls, raw: str | bytes) -> "CachedOutput":
        data = json.loads(raw)
        retried = bool(data.pop("retried", False))
        return cls(Generated(text=str(data["text"]), score=float(data["score"]), num_tokens=int(data["num_tokens"]),
                             hit_max_length=bool(data["hit_max_length"])), retried)


class CacheStore(Protocol):
    """A blocking key -> value store (called from the cache's worker thread only)."""

    def get_many(self, keys: Sequence[str]) -> dict[str, str]: ...

    def put_many(self, items: dict[str, str]) -> None: ...

    def close(self) -> None: ...


def model_fingerprint(info: ModelInfo) -> str:
    """A short fingerprint of the loaded weights: CTranslate2's recorded source fingerprint, else the
    names, sizes and mtimes of the files of a local model directory, else "" (a hub id: name suffices)."""
    recorded = info.extra.get("source_fingerprint")
    if recorded:
        return str(recorded)
    path = Path(info.source)
    if not path.is_dir():
        return ""
    digest = hashlib.sha256()
    for child in sorted(path.iterdir()):
        if child.is_file():
            stat = child.stat()
            digest.update(f"{child.name}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:16]


def model_identity(info: ModelInfo) -> str:
    return json.dumps({"name": info.name, "source": info.source, "backend": info.backend, "dtype": info.dtype,
                       "compute_type": info.extra.get("compute_type"), "fingerprint": model_fingerprint(info)},
                      sort_keys=True)


def cache_key(identity: str, options: GenerationOptions, segment: str, context: str = "") -> str:
    head = json.dumps({"f": CACHE_FORMAT, "model": identity, "options": asdict(options), "context": context},
                      sort_keys=True)
    return hashlib.sha256(f"{head}\n{segment}".encode("utf-8")).hexdigest()


class SQLiteCache:
    """Entries in one SQLite file (WAL). At most `max_entries`: beyond it the least recently used tenth
    is evicted. One connection, used only by the cache's worker thread."""

    def __init__(self, path: Path, max_entries: int) -> None:
        self.path = Path(path)
        self.max_entries = max_entries
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(self.path), timeout=_SQLITE_TIMEOUT_S, check_same_thread=False,
                                   isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("CREATE TABLE IF NOT EXISTS translation_cache "
                         "(key TEXT PRIMARY KEY, value TEXT NOT NULL, used REAL NOT NULL)")
        self._db.execute("CREATE INDEX IF NOT EXISTS translation_cache_used ON translation_cache (used)")
        self._count = self._db.execute("SELECT COUNT(*) FROM translation_cache").fetchone()[0]

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        unique = list(dict.fromkeys(keys))
        for start in range(0, len(unique), 500):  # SQLite's bound-variable limit
            part = unique[start:start + 500]
            marks = ",".join("?" * len(part))
            found.update(self._db.execute(f"SELECT key, value FROM translation_cache WHERE key IN ({marks})",
                                          part).fetchall())
        if found:
            now = time.time()
            self._db.executemany("UPDATE translation_cache SET used = ? WHERE key = ?",
                                 [(now, key) for key in found])
        return found

    def put_many(self, items: dict[str, str]) -> None:
        if not items:
            return
        now = time.time()
        with self._db:  # one transaction
            self._db.execute("BEGIN")
            self._db.executemany("INSERT OR REPLACE INTO translation_cache (key, value, used) VALUES (?, ?, ?)",
                                 [(key, value, now) for key, value in items.items()])
        self._count += len(items)
        if self._count > self.max_entries:
            self._count = self._db.execute("SELECT COUNT(*) FROM translation_cache").fetchone()[0]
            excess = self._count - self.max_entries
            if excess > 0:
                evict = excess + self.max_entries // 10
                self._db.execute("DELETE FROM translation_cache WHERE key IN (SELECT key FROM translation_cache "
                                 "ORDER BY used LIMIT ?)", (evict,))
                self._count = self._db.execute("SELECT COUNT(*) FROM translation_cache").fetchone()[0]

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM translation_cache").fetchone()[0]

    def close(self) -> None:
        self._db.close()


class RedisCache:
    """Entries in Redis under `model_server:tc:<key>` (shared by several server instances). Bound it with
    Redis' maxmemory and an allkeys-lru policy; `ttl_s` (0 = none) expires entries."""

    PREFIX = "model_server:tc:"

    def __init__(self, url: str, *, ttl_s: int = 0, client=None) -> None:
        if client is None:
            try:
                import redis  # optional extra: pip install 'model-server[redis]'
            except ImportError as exc:
                raise RuntimeError("cache_url names Redis but the `redis` package is not installed "
                                   "(pip install 'model-server[redis]')") from exc
            client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._redis = client
        self._ttl_s = ttl_s

    def get_many(self, keys: Sequence[str]) -> dict[str, str]:
        unique = list(dict.fromkeys(keys))
        if not unique:
            return {}
        values = self._redis.mget([self.PREFIX + key for key in unique])
        return {key: value.decode() if isinstance(value, bytes) else value
                for key, value in zip(unique, values) if value is not None}

    def put_many(self, items: dict[str, str]) -> None:
        if not items:
            return
        pipe = self._redis.pipeline()
        for key, value in items.items():
            pipe.set(self.PREFIX + key, value, ex=self._ttl_s or None)
        pipe.execute()

    def close(self) -> None:
        close = getattr(self._redis, "close", None)
        if close:
            close()


@dataclass
class CacheCounters:
    hits: int = 0
    misses: int = 0
    errors: int = 0

    def to_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


class TranslationCache:
    """Async face of a store for one model: lookups and writes on one worker thread; failures -> misses."""

    def __init__(self, store: CacheStore | None, info: ModelInfo, *, name: str = "cache") -> None:
        self.store = store
        self.identity = model_identity(info)
        self.counters = CacheCounters()
        # Metrics hook: called on the event loop with ("hit" | "miss" | "error", count).
        self.observer: Callable[[str, int], None] | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    @property
    def enabled(self) -> bool:
        return self.store is not None

    def key(self, options: GenerationOptions, segment: str, context: str = "") -> str:
        return cache_key(self.identity, options, segment, context)

    async def lookup(self, keys: Sequence[str]) -> dict[str, CachedOutput]:
        """The entries found (undecodable ones count as misses). Never raises."""
        if self.store is None or not keys:
            return {}
        try:
            raw = await asyncio.get_running_loop().run_in_executor(self._executor, self.store.get_many, list(keys))
        except Exception as exc:  # noqa: BLE001 - any store failure degrades to "no cache"
            self._failed("lookup", exc)
            return {}
        found: dict[str, CachedOutput] = {}
        for key, value in raw.items():
            try:
                found[key] = CachedOutput.loads(value)
            except (ValueError, KeyError, TypeError) as exc:
                self._failed("decode", exc)
        return found

    def record(self, hits: int, misses: int) -> None:
        self.counters.hits += hits
        self.counters.misses += misses
        self._observe("hit", hits)
        self._observe("miss", misses)

    async def store_many(self, entries: dict[str, CachedOutput]) -> None:
        """Write entries. Never raises."""
        if self.store is None or not entries:
            return
        items = {key: value.dumps() for key, value in entries.items()}
        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, self.store.put_many, items)
        except Exception as exc:  # noqa: BLE001
            self._failed("write", exc)

    def _failed(self, what: str, exc: BaseException) -> None:
        self.counters.errors += 1
        self._observe("error", 1)
        log.warning("translation cache %s failed (%s: %s); continuing without it", what, type(exc).__name__, exc)

    def _observe(self, kind: str, count: int) -> None:
        if self.observer is not None and count:
            try:
                self.observer(kind, count)
            except Exception:  # noqa: BLE001 - metrics never break translation
                log.exception("cache observer failed")

    def describe(self) -> dict:
        return {"enabled": self.enabled, "store": type(self.store).__name__ if self.store else None,
                **self.counters.to_dict()}

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        if self.store is not None:
            try:
                self.store.close()
            except Exception as exc:  # noqa: BLE001
                log.warning("closing the translation cache failed: %s", exc)


def open_store(*, enabled: bool, path: Path, url: str | None, max_entries: int) -> tuple[CacheStore | None, bool]:
    """The configured store, or None when disabled. (store, failed): a store that cannot be opened (corrupt
    or unwritable file, unreachable Redis) is logged and replaced by no cache."""
    if not enabled:
        return None, False
    try:
        if url:
            return RedisCache(url), False
        return SQLiteCache(path, max_entries), False
    except Exception as exc:  # noqa: BLE001
        log.warning("translation cache unavailable (%s: %s); serving without a cache", type(exc).__name__, exc)
        return None, True


def open_cache(settings, info: ModelInfo) -> TranslationCache:
    """The translation cache of `settings` for the model described by `info` (never raises)."""
    store, failed = open_store(enabled=settings.cache_enabled, path=settings.cache_file(), url=settings.cache_url,
                               max_entries=settings.cache_max_entries)
    cache = TranslationCache(store, info, name="translation-cache")
    if failed:
        cache.counters.errors += 1
    return cache
