"""Where the daemon gets each account's access token: the secret store (see the Accounts
feature, :mod:`instaset.accounts`, which writes them there).

Contract: :meth:`SecretTokens.token` reads the store (in a thread: keyring is synchronous)
at most once per ``ttl`` seconds per account (a keyring lookup per send was one of the
slowest steps of a reply), so a token refreshed by the daemon or replaced by
``instaset connect`` in another process is used within ``ttl`` seconds; the old one stays
valid that long (Meta's refresh does not revoke it), and a token Meta rejects stops every
send anyway (the account is marked ``reconnect_needed``). :meth:`SecretTokens.forget`
drops the cached copy at once. The store is opened lazily, so a daemon that never sends
never touches (or warns about) the keyring.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from typing import Protocol

from instaset.config import Config
from instaset.secrets import SecretStore, open_secrets, token_key


class TokenProvider(Protocol):
    async def token(self, account_id: str) -> str | None: ...

    def forget(self, account_id: str | None = None) -> None:
        """Drop any cached copy (the next :meth:`token` reads the store)."""


class StaticTokens:
    """Tokens held in memory (the sandbox, tests)."""

    def __init__(self, tokens: Mapping[str, str]) -> None:
        self.tokens = dict(tokens)

    async def token(self, account_id: str) -> str | None:
        return self.tokens.get(account_id)

    def forget(self, account_id: str | None = None) -> None:
        """Nothing is cached."""


class SecretTokens:
    """A :class:`~instaset.outbox.TokenProvider` backed by a :class:`SecretStore`."""

    def __init__(self, config: Config, store: SecretStore | None = None, *, ttl: float = 60.0
                 ) -> None:
        self._config = config
        self._store = store
        self.ttl = ttl
        self._cache: dict[str, tuple[str | None, float]] = {}

    @property
    def store(self) -> SecretStore:
        if self._store is None:
            self._store = open_secrets(self._config)
        return self._store

    async def token(self, account_id: str) -> str | None:
        now = time.monotonic()
        hit = self._cache.get(account_id)
        if hit is not None and now - hit[1] < self.ttl:
            return hit[0]
        value = await asyncio.to_thread(self.store.get, token_key(account_id))
        self._cache[account_id] = (value, now)
        return value

    def forget(self, account_id: str | None = None) -> None:
        """Drop the cached token of ``account_id`` (all accounts when None)."""
        if account_id is None:
            self._cache.clear()
        else:
            self._cache.pop(account_id, None)


def default_tokens(config: Config) -> TokenProvider:
    """The token provider for a real (non-sandbox) daemon."""
    return SecretTokens(config)
