"""Where the daemon gets each account's access token: the secret store (see the Accounts
feature, :mod:`instaset.accounts`, which writes them there).

Contract: :meth:`SecretTokens.token` reads the store on every call (in a thread: keyring is
synchronous), so a token refreshed by the daemon or replaced by ``instaset connect`` in
another process is used from the next send on. The store is opened lazily, so a daemon that
never sends never touches (or warns about) the keyring.
"""

from __future__ import annotations

import asyncio

from instaset.config import Config
from instaset.outbox import TokenProvider
from instaset.secrets import SecretStore, open_secrets, token_key


class SecretTokens:
    """A :class:`~instaset.outbox.TokenProvider` backed by a :class:`SecretStore`."""

    def __init__(self, config: Config, store: SecretStore | None = None) -> None:
        self._config = config
        self._store = store

    @property
    def store(self) -> SecretStore:
        if self._store is None:
            self._store = open_secrets(self._config)
        return self._store

    async def token(self, account_id: str) -> str | None:
        return await asyncio.to_thread(self.store.get, token_key(account_id))


def default_tokens(config: Config) -> TokenProvider:
    """The token provider for a real (non-sandbox) daemon."""
    return SecretTokens(config)
