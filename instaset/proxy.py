"""Behind a reverse proxy: who the client is, and how the outside world reaches us.

Contract:

- ``X-Forwarded-For``, ``X-Forwarded-Proto`` and ``X-Forwarded-Host`` are honoured ONLY when
  the direct TCP peer is in ``server.trusted_proxies`` (IP addresses or CIDR ranges, IPv4 or
  IPv6; an IPv4-mapped IPv6 peer such as ``::ffff:127.0.0.1`` counts as its IPv4 address).
  From anyone else they are ignored: a client cannot claim another address, scheme or host.
- The client address is found by walking ``X-Forwarded-For`` from the right (the entry added
  by the proxy nearest to us) past every trusted proxy; the first address that is not a
  trusted proxy is the client. An entry that is not an IP address stops the walk (the last
  trusted hop is then taken as the client): junk to the left of it was written by whoever
  sent the request, not by a proxy we trust.
- ``X-Forwarded-Proto``/``X-Forwarded-Host`` are read at the same depth: with ``k`` proxies
  in the trusted chain, the ``k``-th value from the right (the outermost trusted proxy's),
  or the leftmost when there are fewer values. A proxy that *sets* the header (Caddy, and
  nginx as configured in docs/setup.md) gives one value, which is used. Only ``http`` and
  ``https`` are accepted as schemes and only ``host[:port]`` as hosts; anything else is
  ignored.
- :func:`forwarded_middleware` hands handlers a request whose ``remote``, ``scheme``,
  ``host`` and ``url`` are the client's view; :func:`client_view` gives its
  :class:`ClientView` (also stored under :data:`CLIENT` once known). It never raises and
  never reads the body.
- :func:`external_base_url`: ``server.public_url`` when set (it always wins), else
  ``scheme://host`` as the client used them.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware
from multidict import MultiMapping

from instaset.errors import ConfigError

if TYPE_CHECKING:
    from instaset.config import ServerConfig

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Headers = MultiMapping[str] | Mapping[str, str]

# No nested quantifiers: a hostile header must not make the match slow.
# Letters, digits, inner hyphens; underscores too (not DNS, but container and LAN names
# use them, and they are harmless in a URL).
_LABEL = re.compile(r"(?!-)[A-Za-z0-9_-]{1,63}(?<!-)")
_IPV6 = re.compile(r"[0-9A-Fa-f:.]+")  # no zone id: "%..." may carry anything
_SCHEMES = frozenset({"http", "https"})


@functools.lru_cache(maxsize=4096)  # pure, and peers repeat: one parse per request showed up
def parse_address(text: str) -> Address | None:
    """An address as proxies write it in ``X-Forwarded-For``: ``1.2.3.4``, ``1.2.3.4:5678``,
    ``2001:db8::1``, ``[2001:db8::1]:443`` (optionally quoted). ``None`` when it is not one
    (``unknown``, an obfuscated ``_hidden``, junk). IPv4-mapped IPv6 becomes IPv4."""
    text = text.strip().strip('"').strip()
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        text = text[1:end]
    elif text.count(":") == 1:  # IPv4 with a port; bare IPv6 has at least two colons
        text = text.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> Network:
    """``10.0.0.0/8``, ``127.0.0.1`` (a /32), ``::1``, ``fd00::/8``. Host bits are allowed
    (``10.1.2.3/8`` means ``10.0.0.0/8``). An IPv4-mapped IPv6 range (``::ffff:10.0.0.0/104``)
    becomes its IPv4 range, as peers do. Raises :class:`ValueError` otherwise."""
    net = ipaddress.ip_network(text.strip(), strict=False)
    mapped = ipaddress.IPv6Network("::ffff:0:0/96")
    if isinstance(net, ipaddress.IPv6Network) and net.prefixlen >= 96 and net.subnet_of(mapped):
        v4 = net.network_address.ipv4_mapped
        assert v4 is not None  # inside ::ffff:0:0/96
        return ipaddress.IPv4Network((v4, net.prefixlen - 96))
    return net


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The reverse proxies whose forwarded headers are believed. Empty: nobody's."""

    networks: tuple[Network, ...] = ()

    @classmethod
    def parse(cls, entries: Iterable[str], *, key: str = "server.trusted_proxies"
              ) -> TrustedProxies:
        """Parse config entries; every bad one is reported in one :class:`ConfigError`."""
        networks: list[Network] = []
        problems: list[str] = []
        for i, entry in enumerate(entries):
            try:
                networks.append(parse_network(entry))
            except ValueError:
                problems.append(f"{key}[{i}]: {entry!r} is not an IP address or CIDR range "
                                "(e.g. 127.0.0.1, ::1 or 10.0.0.0/8)")
        if problems:
            raise ConfigError(problems)
        return cls(tuple(networks))

    def trusts(self, address: Address | str | None) -> bool:
        if isinstance(address, str):
            address = parse_address(address)
        if address is None:
            return False
        return any(address in net for net in self.networks if net.version == address.version)


@dataclass(frozen=True, slots=True)
class ProxySettings:
    """What :func:`forwarded_middleware` needs from ``server``."""

    trusted: TrustedProxies = TrustedProxies()
    public_url: str | None = None

    @classmethod
    def from_config(cls, server: ServerConfig) -> ProxySettings:
        return cls(TrustedProxies.parse(server.trusted_proxies), server.public_url or None)


@dataclass(frozen=True, slots=True)
class ClientView:
    """One request as the client made it. ``forwarded`` is true when a trusted proxy's
    headers were used; ``peer`` is always the direct TCP peer."""

    peer: str | None
    client_ip: str | None
    scheme: str
    host: str
    forwarded: bool
    base_url: str


CLIENT = web.RequestKey("instaset_client", ClientView)


def valid_host(text: str) -> bool:
    """Whether ``text`` names a server as a ``Host`` header may: a host name (labels of
    letters, digits, underscores and inner hyphens, 253 characters at most, one trailing
    dot allowed), an IPv4 address or a bracketed IPv6 address without a zone id, with an
    optional port 1-65535. No user info, no percent escapes, no markup: a URL built from it
    is the URL it looks like."""
    host, port = text, None
    if text.startswith("["):
        end = text.find("]")
        host, rest = text[1:end], text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            return False
        port = rest[1:] if rest else None
        if not _IPV6.fullmatch(host):
            return False
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
    else:
        if text.count(":") == 1:
            host, port = text.split(":")
        elif ":" in text:
            return False
        name = host[:-1] if host.endswith(".") else host
        if not 0 < len(name) <= 253 or not all(_LABEL.fullmatch(p) for p in name.split(".")):
            return False
    return port is None or (port.isascii() and port.isdigit() and len(port) <= 5
                            and 0 < int(port) < 65536)


def base_url(public_url: str | None, scheme: str, host: str) -> str:
    """``public_url`` without a trailing slash when set, else ``scheme://host``."""
    if public_url:
        return public_url.rstrip("/")
    return f"{scheme}://{host}"


def _values(headers: Headers, name: str) -> list[str]:
    """Every comma-separated value of every instance of ``name``, in order, stripped."""
    if isinstance(headers, MultiMapping):
        raw: list[str] = list(headers.getall(name, []))
    else:
        raw = [v for k, v in headers.items() if k.lower() == name.lower()]
    return [v.strip() for line in raw for v in line.split(",") if v.strip()]


def _at_depth(values: list[str], depth: int) -> str | None:
    if not values:
        return None
    return values[-min(depth, len(values))]


def resolve(
    peer: str | None, scheme: str, host: str,
    headers: Headers, trusted: TrustedProxies,
    public_url: str | None = None,
) -> ClientView:
    """The client's view of one request (pure; see the module contract)."""
    peer_address = parse_address(peer) if peer else None
    client = str(peer_address) if peer_address is not None else peer
    if peer_address is None or not trusted.trusts(peer_address):
        return ClientView(peer, client, scheme, host, False, base_url(public_url, scheme, host))
    depth = 1  # proxies in the trusted chain: the peer, then each trusted XFF entry
    for entry in reversed(_values(headers, "X-Forwarded-For")):
        address = parse_address(entry)
        if address is None:
            break
        client = str(address)
        if not trusted.trusts(address):
            break
        depth += 1
    proto = (_at_depth(_values(headers, "X-Forwarded-Proto"), depth) or "").lower()
    if proto in _SCHEMES:
        scheme = proto
    forwarded_host = _at_depth(_values(headers, "X-Forwarded-Host"), depth)
    if forwarded_host and valid_host(forwarded_host):
        host = forwarded_host
    return ClientView(peer, client, scheme, host, True, base_url(public_url, scheme, host))


_SETTINGS = web.RequestKey("instaset_proxy_settings", ProxySettings)


def forwarded_middleware(settings: ProxySettings) -> Middleware:
    """The aiohttp middleware applying :func:`resolve` with ``settings``. Put it first in
    the list so every other middleware and handler sees the client's view.

    Only a request from a trusted proxy is resolved (and cloned) up front; any other request
    is already the client's view, and its :class:`ClientView` is built on demand by
    :func:`client_view` (the webhook, most of the traffic, never asks for it)."""
    trusted = settings.trusted

    @web.middleware
    async def forwarded(request: web.Request, handler: Handler) -> web.StreamResponse:
        if trusted.networks and trusted.trusts(request.remote):
            view = resolve(request.remote, request.scheme, request.host, request.headers,
                           trusted, settings.public_url)
            if view.forwarded:
                request = request.clone(scheme=view.scheme, host=view.host,
                                        remote=view.client_ip or "")
            request[CLIENT] = view
        else:
            request[_SETTINGS] = settings
        return await handler(request)

    return forwarded


def client_view(request: web.BaseRequest) -> ClientView:
    """The client's view of ``request``: resolved by the middleware (a trusted proxy's
    request), else the direct view (no header believed) with the middleware's public URL."""
    view = request.get(CLIENT)
    if isinstance(view, ClientView):
        return view
    settings = request.get(_SETTINGS)
    public_url = settings.public_url if isinstance(settings, ProxySettings) else None
    view = resolve(request.remote, request.scheme, request.host, {}, TrustedProxies(),
                   public_url)
    request[CLIENT] = view
    return view


def external_base_url(request: web.BaseRequest, public_url: str | None = None) -> str:
    """The base URL the outside world uses for this server, without a trailing slash:
    ``public_url`` (the argument, else the middleware's ``server.public_url``) when set,
    else the scheme and host the client used (through trusted proxies)."""
    view = client_view(request)
    if public_url:
        return base_url(public_url, view.scheme, view.host)
    return view.base_url
