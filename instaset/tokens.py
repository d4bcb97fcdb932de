"""Where the daemon gets each account's access token (see the Accounts feature)."""

from __future__ import annotations

from instaset.config import Config
from instaset.outbox import StaticTokens, TokenProvider


def default_tokens(config: Config) -> TokenProvider:
    """The token provider for a real (non-sandbox) daemon."""
    return StaticTokens({})
