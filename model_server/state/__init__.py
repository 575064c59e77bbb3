"""Shared state: glossaries, rate limits, idempotency keys, job records and the sentence cache.

Each kind of state has a small interface with two implementations: embedded (this process and its SQLite
file, the default: nothing else to run) and Redis (`state_url`, shared by every replica; the cache keeps its
own `cache_url` so it can live on a Redis with `allkeys-lru`). Nothing above this package knows which one
runs. A Redis that does not answer is `state_unavailable` (503), never a crash: see `redis_client`.
"""
