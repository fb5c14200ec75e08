"""The client address behind load balancers: the rule on header values, then over real HTTP, where
spoofed headers from an untrusted peer change nothing and two citizens behind a trusted proxy get
rate-limit buckets of their own."""

from __future__ import annotations

import random
import shutil
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from kernel.forwarded import TrustedProxies, parse_node
from kernel.settings import Settings, load_settings
from stimulus.stack import running_api
from tests.conftest import TEST_ENV, Stack
from tests.foundation.helpers import auth, citizen_token, open_campaign

PROXIES = TrustedProxies(["10.0.0.0/8", "2001:db8:1::/48", "127.0.0.2"])


@pytest.mark.parametrize(("peer", "forwarded", "x_forwarded_for", "client"), [
    # an untrusted peer: whatever it claims, the socket address
    ("192.0.2.9", [], ["198.51.100.1"], "192.0.2.9"),
    ("192.0.2.9", ["for=198.51.100.1"], [], "192.0.2.9"),
    # a trusted proxy: the right-most address that is not ours; what the client put left of it is ignored
    ("10.0.0.5", [], ["198.51.100.1"], "198.51.100.1"),
    ("10.0.0.5", [], ["203.0.113.66, 198.51.100.1, 10.1.2.3"], "198.51.100.1"),
    ("10.0.0.5", [], ["203.0.113.66", "198.51.100.1"], "198.51.100.1"),         # one header per hop
    ("10.0.0.5", [], [], "10.0.0.5"),                                            # nothing forwarded
    ("10.0.0.5", [], ["10.9.9.9, 10.0.0.7"], "10.9.9.9"),                        # only our own hops
    ("10.0.0.5", [], ["198.51.100.1, garbage"], "10.0.0.5"),                     # a broken hop ends the walk
    # RFC 7239: quoted, with ports, IPv6 in brackets, several elements; it wins over X-Forwarded-For
    ("10.0.0.5", ['for=203.0.113.66;proto=https, for="198.51.100.1:4711";by=10.0.0.5'], ["192.0.2.200"],
     "198.51.100.1"),
    ("10.0.0.5", ['for="[2001:db8:cafe::17]:4711"'], [], "2001:db8:cafe::17"),
    ("10.0.0.5", ['for="[2001:db8:1::9]", for=10.0.0.6'], [], "2001:db8:1::9"),  # all ours: the furthest
    ("10.0.0.5", ["for=198.51.100.1", "for=unknown"], [], "10.0.0.5"),
    ("10.0.0.5", ["proto=https"], [], "10.0.0.5"),                               # an element without for=
    ("2001:db8:1::2", [], ["198.51.100.1"], "198.51.100.1"),
    ("unknown", [], ["198.51.100.1"], "unknown"),
])
def test_which_address_is_the_clients(peer: str, forwarded: list[str], x_forwarded_for: list[str],
                                      client: str) -> None:
    assert PROXIES.client(peer, forwarded, x_forwarded_for) == client


def test_nodes_and_settings() -> None:
    assert str(parse_node("192.0.2.1:80")) == "192.0.2.1"
    assert str(parse_node('"[::1]:443"')) == "::1"
    assert parse_node("_hidden") is None and parse_node("[::1") is None
    assert TrustedProxies([]).client("10.0.0.5", [], ["198.51.100.1"]) == "10.0.0.5"
    assert load_settings({"STIMULUS_TRUSTED_PROXIES": "10.0.0.0/8, 192.0.2.7"}).trusted_proxies == (
        "10.0.0.0/8", "192.0.2.7/32")
    with pytest.raises(ValueError, match="STIMULUS_TRUSTED_PROXIES"):
        load_settings({"STIMULUS_TRUSTED_PROXIES": "10.0.0.0/33"})


# -- over real HTTP: the registration rate limit per address (burst of 2) ----------------------


@pytest.fixture(scope="module")
def proxied_api(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """An API that trusts 127.0.0.2 as its load balancer, with a tight per-address limit."""
    state = tmp_path_factory.mktemp("proxied-state")
    shutil.copytree(stack.settings.state_dir / "secrets", state / "secrets")
    env = {**TEST_ENV, "STIMULUS_TRUSTED_PROXIES": "127.0.0.2/32", "STIMULUS_RATE_LIMIT_ADDRESS_PER_MIN": "12"}
    with running_api(replace(stack.settings, state_dir=Path(state)), workers=1, extra_env=env) as base:
        yield base


def _client(base: str, source: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=base, timeout=30, transport=httpx.AsyncHTTPTransport(local_address=source))


_citizen = iter(range(1_500_000 + random.randrange(10_000) * 100, 10**8))


async def _register(client: httpx.AsyncClient, settings: Settings, campaign_id: str, **headers: str) -> int:
    token = citizen_token(settings, next(_citizen))
    reply = await client.post(f"/v1/campaigns/{campaign_id}/registrations", json={},
                              headers={**auth(token), **headers})
    assert reply.status_code in (201, 429), reply.text
    return reply.status_code


async def test_spoofed_headers_from_an_untrusted_peer_are_ignored(
        proxied_api: str, stack: Stack, operator_token: str) -> None:
    async with _client(proxied_api, "127.0.0.1") as direct:
        campaign_id = await open_campaign(direct, operator_token)
        # Every request claims another address; the peer is not a proxy of ours, so all share its bucket.
        spoofed = [await _register(direct, stack.settings, campaign_id,
                                   **{"X-Forwarded-For": f"198.18.{n}.{random.randrange(256)}",
                                      "Forwarded": f"for=198.19.{n}.1"}) for n in range(4)]
    assert spoofed[:2] == [201, 201] and 429 in spoofed[2:], spoofed


async def test_citizens_behind_a_trusted_proxy_get_buckets_of_their_own(
        proxied_api: str, stack: Stack, operator_token: str) -> None:
    async with _client(proxied_api, "127.0.0.1") as direct:
        campaign_id = await open_campaign(direct, operator_token)
    a, b = (f"198.51.{random.randrange(256)}.{n}" for n in (1, 2))
    async with _client(proxied_api, "127.0.0.2") as balancer:
        first = [await _register(balancer, stack.settings, campaign_id, **{"X-Forwarded-For": a})
                 for _ in range(3)]
        # Citizen B, behind the same balancer, still has a full bucket; said in RFC 7239's words.
        second = [await _register(balancer, stack.settings, campaign_id, Forwarded=f'for="{b}:5555";proto=https')
                  for _ in range(2)]
        # A client cannot step out of its bucket by writing another address in front of its own.
        spoofed_in_front = f"203.0.113.{random.randrange(256)}, {a}"
        again = await _register(balancer, stack.settings, campaign_id, **{"X-Forwarded-For": spoofed_in_front})
    assert first[:2] == [201, 201] and first[2] == 429, first
    assert second == [201, 201], second
    assert again == 429
