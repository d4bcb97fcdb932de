"""Forwarded headers: believed only from trusted proxies; public_url wins for the base URL."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from hypothesis import given
from hypothesis import strategies as st
from multidict import CIMultiDict
from typer.testing import CliRunner

from instaset.cli import app
from instaset.errors import ConfigError
from instaset.proxy import (
    ClientView,
    ProxySettings,
    TrustedProxies,
    client_view,
    external_base_url,
    forwarded_middleware,
    parse_address,
    resolve,
)

ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]


def trusted(*entries: str) -> TrustedProxies:
    return TrustedProxies.parse(entries)


# --- pure parts -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("203.0.113.7", "203.0.113.7"),
    (" 203.0.113.7:51234 ", "203.0.113.7"),
    ('"203.0.113.7"', "203.0.113.7"),
    ("2001:db8::7", "2001:db8::7"),
    ("[2001:db8::7]:443", "2001:db8::7"),
    ("::ffff:10.1.2.3", "10.1.2.3"),
    ("unknown", None),
    ("_hidden", None),
    ("[2001:db8::7", None),
    ("", None),
])
def test_parse_address(text: str, expected: str | None) -> None:
    got = parse_address(text)
    assert (str(got) if got is not None else None) == expected


def test_trusted_proxies_ips_and_cidrs() -> None:
    t = trusted("127.0.0.1", "10.0.0.0/8", "fd00::/8", "192.168.1.9/24")
    assert t.trusts("127.0.0.1") and not t.trusts("127.0.0.2")
    assert t.trusts("10.255.3.4") and not t.trusts("11.0.0.1")
    assert t.trusts("fd12::1") and not t.trusts("fe80::1")
    assert t.trusts("192.168.1.200")  # host bits in the config mean the whole /24
    assert t.trusts("::ffff:10.0.0.1")  # IPv4-mapped IPv6 peer
    assert trusted("::ffff:10.0.0.0/104").trusts("10.9.9.9")  # a mapped range is IPv4
    assert not t.trusts(None) and not t.trusts("") and not t.trusts("nonsense")
    assert not TrustedProxies().trusts("127.0.0.1")  # nobody by default


def test_bad_trusted_proxies_name_each_entry() -> None:
    with pytest.raises(ConfigError) as info:
        trusted("127.0.0.1", "localhost", "10.0.0.0/33")
    assert info.value.problems[0].startswith("server.trusted_proxies[1]: 'localhost'")
    assert info.value.problems[1].startswith("server.trusted_proxies[2]: '10.0.0.0/33'")
    assert len(info.value.problems) == 2


def test_bad_trusted_proxies_fail_workflows_validate_at_their_line(tmp_path: Path) -> None:
    """Found by the s18 audit: `workflows validate` (and doctor) said config OK; only
    `serve` refused them, with the same words but no file:line."""
    path = tmp_path / "config.yaml"
    path.write_text("server: {port: 18814, trusted_proxies: [banana, '10.0.0.0/33', '::1']}\n")
    result = CliRunner().invoke(app, ["--config", str(path), "workflows", "validate"])
    assert result.exit_code == 1
    assert result.stderr.splitlines() == [
        f"{path}:1:41: server.trusted_proxies[0]: 'banana' is not an IP address or CIDR range"
        " (e.g. 127.0.0.1, ::1 or 10.0.0.0/8)",
        f"{path}:1:49: server.trusted_proxies[1]: '10.0.0.0/33' is not an IP address or CIDR"
        " range (e.g. 127.0.0.1, ::1 or 10.0.0.0/8)"]
    path.write_text("server: {trusted_proxies: [10.0.0.0/8, '::ffff:10.0.0.0/104']}\n")
    result = CliRunner().invoke(app, ["--config", str(path), "workflows", "validate"])
    assert result.exit_code == 0, result.stderr


SPOOF = {"X-Forwarded-For": "6.6.6.6", "X-Forwarded-Proto": "https",
         "X-Forwarded-Host": "evil.example"}


def test_untrusted_peer_headers_are_ignored() -> None:
    view = resolve("198.51.100.2", "http", "10.0.0.5:8787", SPOOF, trusted("10.0.0.0/8"))
    assert view == ClientView("198.51.100.2", "198.51.100.2", "http", "10.0.0.5:8787", False,
                              "http://10.0.0.5:8787")


def test_trusted_peer_headers_are_used() -> None:
    headers = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
               "X-Forwarded-Host": "dm.example.com"}
    view = resolve("127.0.0.1", "http", "127.0.0.1:8787", headers, trusted("127.0.0.1"))
    assert view == ClientView("127.0.0.1", "203.0.113.7", "https", "dm.example.com", True,
                              "https://dm.example.com")


def test_client_is_the_first_untrusted_hop_from_the_right() -> None:
    # The client wrote "6.6.6.6" itself; the CDN appended the real client, nginx the CDN.
    headers = CIMultiDict([("X-Forwarded-For", "6.6.6.6, 203.0.113.7"),
                           ("X-Forwarded-For", "10.1.1.1")])
    view = resolve("10.0.0.2", "http", "app:8787", headers, trusted("10.0.0.0/8"))
    assert view.client_ip == "203.0.113.7"


def test_every_hop_trusted_gives_the_leftmost() -> None:
    view = resolve("10.0.0.2", "http", "h", {"X-Forwarded-For": "10.9.9.9, 10.1.1.1"},
                   trusted("10.0.0.0/8"))
    assert view.client_ip == "10.9.9.9"


def test_junk_entry_stops_the_walk() -> None:
    view = resolve("10.0.0.2", "http", "h", {"X-Forwarded-For": "1.2.3.4, garbage, 10.1.1.1"},
                   trusted("10.0.0.0/8"))
    assert view.client_ip == "10.1.1.1"  # the last trusted hop, never the forged 1.2.3.4


def test_proto_and_host_come_from_the_outermost_trusted_proxy() -> None:
    # Two trusted proxies both appended: the outer one saw https://dm.example.com.
    headers = {"X-Forwarded-For": "203.0.113.7, 10.1.1.1",
               "X-Forwarded-Proto": "https, http", "X-Forwarded-Host": "dm.example.com, app"}
    view = resolve("10.0.0.2", "http", "app:8787", headers, trusted("10.0.0.0/8"))
    assert (view.scheme, view.host) == ("https", "dm.example.com")
    # One proxy that appended to a forged value: its own (rightmost) value counts.
    forged = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "http, https",
              "X-Forwarded-Host": "evil.example, dm.example.com"}
    view = resolve("10.0.0.2", "http", "app:8787", forged, trusted("10.0.0.0/8"))
    assert (view.scheme, view.host) == ("https", "dm.example.com")


@pytest.mark.parametrize(("proto", "host"), [
    ("gopher", "dm.example.com/path"), ("javascript", "a b"), ("", "<script>"),
    ("https://x", "x" * 300),
])
def test_invalid_proto_and_host_are_ignored(proto: str, host: str) -> None:
    headers = {"X-Forwarded-Proto": proto, "X-Forwarded-Host": host}
    view = resolve("127.0.0.1", "http", "127.0.0.1:8787", headers, trusted("127.0.0.1"))
    assert (view.scheme, view.host) == ("http", "127.0.0.1:8787")


@pytest.mark.parametrize("host", ["..", "-", "x:0", "a" * 261, "user@host", "%41", "é.com"])
def test_forwarded_hosts_a_url_cannot_be_built_from_are_ignored(host: str) -> None:
    view = resolve("127.0.0.1", "http", "127.0.0.1:8787", {"X-Forwarded-Host": host},
                   trusted("127.0.0.1"))
    assert view.host == "127.0.0.1:8787"


def test_ipv6_host_with_port_is_accepted() -> None:
    view = resolve("::1", "http", "h", {"X-Forwarded-Host": "[2001:db8::1]:8443"},
                   trusted("::1"))
    assert view.host == "[2001:db8::1]:8443" and view.client_ip == "::1"


def test_public_url_wins_over_headers() -> None:
    headers = {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "other.example"}
    view = resolve("127.0.0.1", "http", "h", headers, trusted("127.0.0.1"),
                   public_url="https://dm.example.com/")
    assert view.base_url == "https://dm.example.com"
    assert view.host == "other.example"  # the request's own view is still reported


_header_text = st.text(st.characters(codec="latin-1", exclude_characters="\r\n"), max_size=60)


@given(peer=st.ip_addresses(), xff=_header_text, proto=_header_text, host=_header_text)
def test_headers_never_matter_from_an_untrusted_peer(peer: Any, xff: str, proto: str,
                                                     host: str) -> None:
    headers = {"X-Forwarded-For": xff, "X-Forwarded-Proto": proto, "X-Forwarded-Host": host}
    t = trusted("203.0.113.0/24")
    if t.trusts(str(peer)):
        return
    view = resolve(str(peer), "http", "direct:8787", headers, t)
    assert (view.client_ip, view.scheme, view.host, view.forwarded) == (
        str(parse_address(str(peer))), "http", "direct:8787", False)


# --- a real server on 127.0.0.1 ---------------------------------------------------------------


async def echo(request: web.Request) -> web.Response:
    body = await request.read()
    view = client_view(request)
    return web.json_response({
        "remote": request.remote, "scheme": request.scheme, "host": request.host,
        "url": str(request.url), "client_ip": view.client_ip, "peer": view.peer,
        "forwarded": view.forwarded, "base": external_base_url(request),
        "body": body.decode(), "match": request.match_info.get("name"),
    })


async def serve(aiohttp_client: ClientFactory, settings: ProxySettings) -> TestClient:  # type: ignore[type-arg]
    app = web.Application(middlewares=[forwarded_middleware(settings)])
    app.add_routes([web.get("/echo/{name}", echo), web.post("/echo/{name}", echo)])
    return await aiohttp_client(app)


HEADERS = {"X-Forwarded-For": "203.0.113.7", "X-Forwarded-Proto": "https",
           "X-Forwarded-Host": "dm.example.com"}


@pytest.mark.parametrize("entry", ["127.0.0.1", "127.0.0.0/8", "::ffff:127.0.0.1/128"])
async def test_live_trusted_peer(aiohttp_client: ClientFactory, entry: str) -> None:
    client = await serve(aiohttp_client, ProxySettings(trusted(entry)))
    resp = await client.post("/echo/x?a=1", data=b"raw body", headers=HEADERS)
    got = await resp.json()
    assert got == {
        "remote": "203.0.113.7", "scheme": "https", "host": "dm.example.com",
        "url": "https://dm.example.com/echo/x?a=1", "client_ip": "203.0.113.7",
        "peer": "127.0.0.1", "forwarded": True, "base": "https://dm.example.com",
        "body": "raw body", "match": "x",
    }


async def test_live_untrusted_peer(aiohttp_client: ClientFactory) -> None:
    client = await serve(aiohttp_client, ProxySettings(trusted("10.0.0.0/8", "::1")))
    resp = await client.get("/echo/y", headers=HEADERS)
    got = await resp.json()
    origin = f"http://127.0.0.1:{client.port}"
    assert got["remote"] == got["client_ip"] == got["peer"] == "127.0.0.1"
    assert got["forwarded"] is False
    assert got["url"] == f"{origin}/echo/y" and got["base"] == origin


async def test_live_public_url_precedence(aiohttp_client: ClientFactory) -> None:
    settings = ProxySettings(trusted("127.0.0.1"), public_url="https://ig.example.org/")
    client = await serve(aiohttp_client, settings)
    got = await (await client.get("/echo/z", headers=HEADERS)).json()
    assert got["base"] == "https://ig.example.org"
    assert got["client_ip"] == "203.0.113.7"  # the client is still found


async def test_without_the_middleware_nothing_is_believed(aiohttp_client: ClientFactory) -> None:
    async def handler(request: web.Request) -> web.Response:
        view = client_view(request)
        return web.json_response({"forwarded": view.forwarded, "base": external_base_url(request),
                                  "explicit": external_base_url(request, "https://a.example/")})

    app = web.Application()
    app.add_routes([web.get("/", handler)])
    client = await aiohttp_client(app)
    got = await (await client.get("/", headers=HEADERS)).json()
    assert got == {"forwarded": False, "base": f"http://127.0.0.1:{client.port}",
                   "explicit": "https://a.example"}


def test_settings_from_config() -> None:
    from instaset.config import ServerConfig

    settings = ProxySettings.from_config(
        ServerConfig(public_url="https://dm.example.com", trusted_proxies=["10.0.0.0/8"]))
    assert settings.public_url == "https://dm.example.com"
    assert settings.trusted.trusts("10.2.3.4") and not settings.trusted.trusts("127.0.0.1")
    with pytest.raises(ConfigError, match=r"trusted_proxies\[0\]"):
        # A ServerConfig refuses it itself since s18; serve's own parse still stands.
        ProxySettings.from_config(ServerConfig.model_construct(trusted_proxies=["not-an-ip"]))
