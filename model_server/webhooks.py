"""Signed webhook deliveries to client-given URLs, without letting clients aim the server at its own network.

`WebhookSender.check(url)` resolves the URL's host (off the event loop, with a timeout) and refuses it
(`callback_not_allowed`) when any address it resolves to is loopback, private, link-local, multicast,
unspecified, otherwise not public, or a cloud metadata address - including IPv4 addresses embedded in
IPv6 forms (IPv4-mapped, IPv4-compatible, 6to4, Teredo, NAT64) - unless `webhook_allowed_hosts` lists the
name, the address or a network holding it.

`WebhookSender.deliver` then POSTs with, per attempt: one resolution and check, a connection to exactly the
checked address (the URL is rewritten to the IP; `Host` and TLS SNI/certificate checks keep the name), so a
DNS answer that changes between check and connect (rebinding) cannot redirect it; no redirects followed; no
proxy from the environment; the receiver's body never read; one total timeout over the whole attempt.

Signature: `X-Model-Server-Timestamp: <unix seconds>` and `X-Model-Server-Signature: sha256=<hex
HMAC-SHA256 over "<timestamp>.<raw body>" with webhook_secret>`; receivers verify it and reject old
timestamps (docs/operations.md has the snippet).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import ipaddress
import logging
import re
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Awaitable, Callable

from model_server.errors import ServiceError

log = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Model-Server-Signature"
TIMESTAMP_HEADER = "X-Model-Server-Timestamp"

DNS_THREADS = 4  # concurrent callback host lookups
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Instance metadata and agent endpoints of the big clouds: refused by name in the message, since reaching
# them from a callback is the classic way to steal a machine's credentials. Most are also link-local or
# private; Azure's wireserver (168.63.129.16) is a public address that only means something inside Azure.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254",  # AWS, GCP, Azure, OpenStack, DigitalOcean, Oracle
    "fd00:ec2::254",    # AWS over IPv6
    "169.254.170.2",    # AWS ECS task metadata
    "169.254.170.23", "fd00:ec2::23",  # AWS EKS pod identity
    "100.100.100.200",  # Alibaba Cloud
    "192.0.0.192",      # Oracle Cloud (classic)
    "168.63.129.16",    # Azure wireserver
))
NAT64_PREFIXES = (ipaddress.ip_network("64:ff9b::/96"), ipaddress.ip_network("64:ff9b:1::/48"))
_HOSTNAME = re.compile(r"(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*")


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The signature header's value: HMAC-SHA256 over `<timestamp>.<body>`."""
    return "sha256=" + hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _unmapped(address: IPAddress) -> IPAddress:
    """::ffff:a.b.c.d is the IPv4 host a.b.c.d: check (and connect to) it as IPv4."""
    mapped = getattr(address, "ipv4_mapped", None)
    return mapped if mapped is not None else address


def _embedded_ipv4(address: IPAddress) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address reaches through a translation or tunnel mechanism."""
    if not isinstance(address, ipaddress.IPv6Address):
        return []
    found: list[ipaddress.IPv4Address] = []
    if int(address) >> 32 == 0 and int(address) > 1:  # IPv4-compatible ::a.b.c.d (deprecated, still routed by some)
        found.append(ipaddress.IPv4Address(int(address)))
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)
    if any(address in prefix for prefix in NAT64_PREFIXES):
        found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def refusal(address: IPAddress) -> str | None:
    """Why a callback must not go to `address` (None: a public address)."""
    address = _unmapped(address)
    for candidate in (address, *_embedded_ipv4(address)):
        if candidate in METADATA_ADDRESSES:
            return "a cloud metadata address"
        for flag, reason in (("is_unspecified", "the unspecified address"), ("is_loopback", "a loopback address"),
                             ("is_link_local", "a link-local address"), ("is_multicast", "a multicast address"),
                             ("is_private", "a private address")):
            if getattr(candidate, flag):
                return reason
        if not candidate.is_global:
            return "not a public address"
    return None


@dataclass(frozen=True)
class AllowList:
    """`webhook_allowed_hosts`: comma-separated host names, addresses and networks (CIDR) exempt from the
    address checks, e.g. `127.0.0.1,::1` for tests or `cms.internal,10.20.0.0/16` for an in-house CMS."""

    names: frozenset[str] = frozenset()
    networks: tuple[IPNetwork, ...] = ()

    @classmethod
    def parse(cls, text: str) -> "AllowList":
        names, networks = set(), []
        for entry in (part.strip() for part in text.split(",")):
            if not entry:
                continue
            try:
                networks.append(ipaddress.ip_network(entry.strip("[]"), strict=False))
                continue
            except ValueError:
                pass
            name = entry.lower().rstrip(".")
            if not _HOSTNAME.fullmatch(name):
                raise ValueError(f"webhook_allowed_hosts: {entry!r} is neither a host name, an IP address nor a "
                                 "network such as 10.0.0.0/8")
            names.add(name)
        return cls(frozenset(names), tuple(networks))

    def allows(self, host: str, address: IPAddress) -> bool:
        return host.lower().rstrip(".") in self.names or any(address in network for network in self.networks
                                                              if network.version == address.version)


@dataclass(frozen=True)
class Target:
    """A callback URL whose host was resolved and checked: connect only to `addresses`."""

    url: str
    host: str                          # the name, for Host and TLS SNI
    addresses: tuple[IPAddress, ...]   # every address the host resolved to, all allowed


class SystemResolver:
    """getaddrinfo (it blocks) in a few threads of its own: slow lookups - which a client can cause at will
    with a name under its control - wait for each other and time out, but never starve the default thread
    pool that the rest of the server uses."""

    def __init__(self, threads: int = DNS_THREADS) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="webhook-dns")

    async def __call__(self, host: str, port: int) -> list[str]:
        infos = await asyncio.get_running_loop().run_in_executor(
            self._pool, partial(socket.getaddrinfo, host, port, type=socket.SOCK_STREAM))
        return [info[4][0] for info in infos]

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def _refuse(message: str) -> ServiceError:
    return ServiceError("callback_not_allowed", message + "; MODEL_SERVER_WEBHOOK_ALLOWED_HOSTS can allow a "
                        "trusted internal receiver")


class WebhookSender:
    """Checks callback URLs and delivers signed POSTs to them, retrying with exponential backoff."""

    def __init__(self, *, secret: str | None, allowed: AllowList, timeout_s: float, resolve_timeout_s: float,
                 max_attempts: int, backoff_s: float, resolve: Resolver | None = None,
                 verify: ssl.SSLContext | bool = True, observe: Callable[[str], None] | None = None) -> None:
        self.secret = secret
        self.allowed = allowed
        self.timeout_s = timeout_s
        self.resolve_timeout_s = resolve_timeout_s
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self._resolve = resolve or SystemResolver()  # tests give a fake DNS
        self._verify = verify    # TLS trust (tests: their own CA); certificates are checked against the name
        self._observe = observe or (lambda outcome: None)
        self._client = None

    @classmethod
    def from_settings(cls, settings, **kwargs) -> "WebhookSender":
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        return cls(secret=secret, allowed=AllowList.parse(settings.webhook_allowed_hosts),
                   timeout_s=settings.webhook_timeout_s, resolve_timeout_s=settings.webhook_resolve_timeout_s,
                   max_attempts=settings.webhook_max_attempts, backoff_s=settings.webhook_backoff_s, **kwargs)

    # ----- checking -----
    async def check(self, url: str) -> Target:
        """Resolve and check `url`'s host; ServiceError callback_not_allowed if it must not be called."""
        import httpx

        try:
            parsed = httpx.URL(url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise _refuse(f"callback_url is not a valid URL ({exc})") from None
        if parsed.scheme not in ("http", "https") or not parsed.raw_host:
            raise _refuse("callback_url must be an http:// or https:// URL with a host")
        host = parsed.raw_host.decode("ascii")
        addresses = [_unmapped(a) for a in await self._addresses(host, parsed.port or
                                                                (443 if parsed.scheme == "https" else 80))]
        for address in addresses:
            reason = None if self.allowed.allows(host, address) else refusal(address)
            if reason is not None:
                what = f"{host} is" if _is_ip(host) else f"host {host!r} resolves to"
                raise _refuse(f"callback_url {what} {reason}")
        return Target(url=url, host=host, addresses=tuple(dict.fromkeys(addresses)))

    async def _addresses(self, host: str, port: int) -> list[IPAddress]:
        if _is_ip(host):
            return [ipaddress.ip_address(host)]
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                found = await self._resolve(host, port)
        except TimeoutError:
            raise _refuse(f"callback_url host {host!r} did not resolve within {self.resolve_timeout_s:g}s") from None
        except OSError:  # socket.gaierror: no such name
            raise _refuse(f"callback_url host {host!r} does not resolve") from None
        if not found:
            raise _refuse(f"callback_url host {host!r} does not resolve")
        return [ipaddress.ip_address(a.split("%", 1)[0]) for a in found]  # drop IPv6 zone ids

    # ----- delivering -----
    async def deliver(self, url: str, body: bytes, *, headers: dict[str, str], attempts_done: int,
                      on_attempt: Callable[[int, bool], Awaitable[None]]) -> bool:
        """Try until delivered or `max_attempts` (counting `attempts_done`); `on_attempt(n, ok)` after each."""
        attempts = attempts_done
        while attempts < self.max_attempts:
            attempts += 1
            why = await self.attempt(url, body, headers)
            await on_attempt(attempts, why is None)
            if why is None:
                return True
            log.warning("webhook to %s failed (attempt %d/%d): %s", _origin(url), attempts, self.max_attempts, why)
            if attempts < self.max_attempts:
                await asyncio.sleep(self.backoff_s * 2 ** (attempts - 1))
        return False

    async def attempt(self, url: str, body: bytes, headers: dict[str, str]) -> str | None:
        """One signed POST within `timeout_s` in all; None when the receiver answered 2xx, else why not."""
        import httpx

        try:
            async with asyncio.timeout(self.timeout_s):
                target = await self.check(url)
                status = await self._post(target, body, headers)
        except ServiceError as exc:
            outcome, why = "refused", exc.message
        except TimeoutError:
            outcome, why = "failed", f"no answer within {self.timeout_s:g}s"
        except httpx.HTTPError as exc:
            outcome, why = "failed", f"{type(exc).__name__}: {exc}"
        else:
            ok = 200 <= status < 300
            outcome = "delivered" if ok else "failed"
            why = None if ok else f"HTTP {status}" + (" (redirects are not followed)" if 300 <= status < 400 else "")
        self._observe(outcome)
        return why

    async def _post(self, target: Target, body: bytes, headers: dict[str, str]) -> int:
        """POST to each checked address in turn until one accepts the connection; the status code."""
        import httpx

        assert self.secret is not None, "callers check the secret first (callback_url needs one)"
        parsed = httpx.URL(target.url)
        timestamp = str(int(time.time()))
        signed = {**headers, "content-type": "application/json", "host": parsed.netloc.decode("ascii"),
                  TIMESTAMP_HEADER: timestamp, SIGNATURE_HEADER: sign(self.secret, timestamp, body)}
        # Certificates are checked against the name; the connection goes to the checked IP.
        extensions = {"sni_hostname": target.host} if parsed.scheme == "https" and not _is_ip(target.host) else {}
        client = self._http()
        failure: httpx.ConnectError | None = None
        for address in target.addresses:
            request = client.build_request("POST", parsed.copy_with(host=str(address)), content=body,
                                           headers=signed, extensions=extensions)
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                failure = exc
                continue
            await response.aclose()  # the receiver's body is never read
            return response.status_code
        assert failure is not None
        raise failure

    def _http(self):
        import httpx

        if self._client is None:
            # No pooled connections: each delivery opens its own, so a TLS session made for one name is
            # never reused for another name on the same address. No proxies from the environment either:
            # the checked address is the one connected to.
            self._client = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=self.timeout_s,
                                             verify=self._verify, limits=httpx.Limits(max_keepalive_connections=0))
        return self._client

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
        if isinstance(self._resolve, SystemResolver):
            self._resolve.close()


def _origin(url: str) -> str:
    """scheme://host:port of a URL, for logs: paths and queries can hold the receiver's tokens."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return "(invalid URL)"
    return f"{parsed.scheme}://{parsed.netloc.decode('ascii')}"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
