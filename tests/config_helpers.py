"""Shared helpers of the config tests."""

from __future__ import annotations

import pytest

from instaset.config import parse_config_text
from instaset.errors import ConfigError


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    """The problems loading ``text`` as config.yaml reports (it must fail), one per line of
    the error."""
    with pytest.raises(ConfigError) as info:
        parse_config_text(text, "config.yaml", env or {})
    assert str(info.value) == "\n".join(info.value.problems)
    return info.value.problems
