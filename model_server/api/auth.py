"""Optional API keys (off unless `api_keys_file` or `api_keys` is set).

Keys come in three forms, one per line of the file or per comma-separated entry of `api_keys`:
``key`` (named ``key-<first 8 hex of its SHA-256>``), ``name:key``, or ``name:sha256:<64 hex>``
(pre-hashed: the key itself never touches the server's disk). Blank lines and ``#`` comments are
skipped. Only SHA-256 digests are kept in memory; a presented key is hashed and compared with every
stored digest by `hmac.compare_digest`, with no early exit. Keys are never logged: the key *name* is
the request's principal (rate limits, logs).

Clients send ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` (X-API-Key wins when both are
present). No key: 401 ``unauthorized``; a wrong key: 403 ``forbidden``.

Why pure ASGI middleware and not a FastAPI dependency: it runs before `BodyGuard`, so an anonymous
client can make the server neither buffer a body nor parse JSON (a refused body is only drained -
read and discarded, up to `max_drain_bytes` - so that the client reads the 401), and every route -
including routes added later - is protected unless it is listed open here (secure by default; a
dependency would have to be remembered on each router). The OpenAPI spec documents it (`model_server.api.operations`).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from starlette.types import ASGIApp, Receive, Scope, Send

from model_server.api.context import context_of, header, refuse
from model_server.errors import ServiceError
from model_server.settings import Settings

# Always reachable without a key: probes and the API's own documentation.
OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
METRICS_PATH = "/metrics"

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX_DIGEST = re.compile(r"[0-9a-fA-F]{64}")


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApiKey:
    name: str
    digest: bytes  # SHA-256 of the key

    def __repr__(self) -> str:  # never print a digest either
        return f"ApiKey(name={self.name!r})"


def parse_key_entry(entry: str, where: str) -> ApiKey:
    """One entry: 'key', 'name:key' or 'name:sha256:<hex>'. `where` names it in errors (never the key)."""
    name, sep, rest = entry.partition(":")
    if not sep:
        return ApiKey(name=f"key-{hash_key(entry)[:8]}", digest=hashlib.sha256(entry.encode()).digest())
    if not _NAME.fullmatch(name):
        raise ValueError(f"{where}: key name must be 1-64 of A-Z a-z 0-9 . _ - (starting with a letter or digit)")
    if rest.startswith("sha256:"):
        hex_digest = rest.removeprefix("sha256:")
        if not _HEX_DIGEST.fullmatch(hex_digest):
            raise ValueError(f"{where}: 'sha256:' must be followed by 64 hex digits")
        return ApiKey(name=name, digest=bytes.fromhex(hex_digest))
    if not rest:
        raise ValueError(f"{where}: key {name!r} is empty")
    return ApiKey(name=name, digest=hashlib.sha256(rest.encode()).digest())


class ApiKeys:
    """The configured keys, by digest only. Falsy when auth is off."""

    def __init__(self, keys: Iterable[ApiKey] = ()) -> None:
        self._keys = tuple(keys)
        names = [key.name for key in self._keys]
        if len(set(names)) != len(names):
            raise ValueError(f"duplicate API key names: {sorted({n for n in names if names.count(n) > 1})}")
        if len({key.digest for key in self._keys}) != len(self._keys):
            raise ValueError("the same API key is configured twice (under different names)")

    def __len__(self) -> int:
        return len(self._keys)

    @property
    def names(self) -> list[str]:
        return [key.name for key in self._keys]

    def identify(self, presented: str) -> str | None:
        """The name of the key `presented`, or None. Compares against every key, without early exit."""
        digest = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: str | None = None
        for key in self._keys:
            if hmac.compare_digest(digest, key.digest):
                found = key.name
        return found


def load_api_keys(settings: Settings) -> ApiKeys:
    """Keys from `api_keys_file` and `api_keys` together; ValueError (naming the line, not the key) if bad.
    Called once at start-up (`install_operations`; `model-server serve` before loading any model)."""
    keys: list[ApiKey] = []
    if settings.api_keys_file is not None:
        path = Path(settings.api_keys_file)
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as exc:
            raise ValueError(f"api_keys_file {path}: cannot read it ({exc.strerror or exc})") from None
        for number, line in enumerate(lines, 1):
            entry = line.strip()
            if entry and not entry.startswith("#"):
                keys.append(parse_key_entry(entry, f"api_keys_file {path} line {number}"))
        if not keys:
            raise ValueError(f"api_keys_file {path} holds no keys (auth would lock every client out)")
    if settings.api_keys is not None:
        entries = [e.strip() for e in settings.api_keys.get_secret_value().split(",")]
        keys += [parse_key_entry(e, f"api_keys entry {i}") for i, e in enumerate(entries, 1) if e]
    return ApiKeys(keys)


def exposure_warning(settings: Settings) -> str | None:
    """What to say at start-up when the server listens beyond loopback with auth off: then anyone who can
    reach the port can translate, read and edit glossaries, and submit and cancel jobs (docs/operations.md,
    "Security model"). None when auth is on or the bind address is loopback."""
    if settings.api_keys_file is not None or settings.api_keys is not None:
        return None
    host = settings.host.strip("[]")
    if host == "localhost" or _is_loopback(host):
        return None
    return (f"auth is off and the server listens on {settings.host}: every client that can reach port "
            f"{settings.port} can use every endpoint; set MODEL_SERVER_API_KEYS_FILE (docs/operations.md, "
            "'Security model') or bind MODEL_SERVER_HOST=127.0.0.1")


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False   # a host name other than localhost: it may resolve to anything


def authorization_token(scope: Scope, scheme: str) -> str | None:
    """The token of `Authorization: <scheme> <token>` (scheme in any case), or None if the request has none."""
    raw = header(scope, b"authorization")
    if raw is None:
        return None
    sent_scheme, _, token = raw.decode("latin-1").strip().partition(" ")
    return token.strip() or None if sent_scheme.lower() == scheme.lower() else None


def presented_key(scope: Scope) -> str | None:
    """The key a request carries: X-API-Key, else an Authorization Bearer token; None if neither."""
    raw = header(scope, b"x-api-key")
    if raw is not None and raw.strip():
        return raw.strip().decode("latin-1")
    return authorization_token(scope, "bearer")


def is_protected(path: str, *, metrics_require_key: bool) -> bool:
    if path == METRICS_PATH:
        return metrics_require_key
    return path not in OPEN_PATHS


class AuthGuard:
    """Refuses requests to protected paths without a valid key; records the key's name as principal."""

    def __init__(self, app: ASGIApp, *, keys: ApiKeys, metrics_require_key: bool = False,
                 max_drain_bytes: int = 0) -> None:
        self.app = app
        self.keys = keys
        self.metrics_require_key = metrics_require_key
        self.max_drain_bytes = max_drain_bytes  # a refused body is drained so the client reads the answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or not self.keys
                or not is_protected(scope["path"], metrics_require_key=self.metrics_require_key)):
            await self.app(scope, receive, send)
            return
        key = presented_key(scope)
        name = self.keys.identify(key) if key is not None else None
        if name is None:
            await refuse(scope, receive, send, _unauthorized() if key is None else ServiceError(
                "forbidden", "the API key is not valid"), drain_bytes=self.max_drain_bytes)
            return
        context = context_of(scope)
        if context is not None:
            context.principal = name
        await self.app(scope, receive, send)


def _unauthorized() -> ServiceError:
    return ServiceError("unauthorized", "an API key is required: send 'Authorization: Bearer <key>' or "
                        "'X-API-Key: <key>'", headers={"WWW-Authenticate": 'Bearer realm="model-server"'})


def main(argv: list[str] | None = None) -> int:
    """`python -m model_server.api.auth NAME < key`: print the pre-hashed entry 'NAME:sha256:<hex>'."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or not _NAME.fullmatch(args[0]):
        print("usage: python -m model_server.api.auth NAME < file-holding-the-key", file=sys.stderr)
        return 2
    key = sys.stdin.read().strip()
    if not key:
        print("no key on stdin", file=sys.stderr)
        return 2
    print(f"{args[0]}:sha256:{hash_key(key)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
