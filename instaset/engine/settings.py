"""Engine settings: the few account-wide values :func:`~instaset.engine.decide.decide` needs."""

from __future__ import annotations

from dataclasses import dataclass
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

__all__ = ["EngineSettings"]


@dataclass(frozen=True, slots=True)
class EngineSettings:
    """``timezone`` (IANA name) is the creator's, for ``hours``/``quiet_hours``;
    ``window_seconds`` is Meta's messaging window; ``default_pause_seconds`` is how long a
    ``handoff`` without ``pause_for`` pauses automation. Raises ``ValueError`` on an unknown
    timezone, so a bad config fails at load time rather than at the first event."""

    account_id: str
    timezone: str = "UTC"
    window_seconds: int = 86400
    default_pause_seconds: int = 43200

    def __post_init__(self) -> None:
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError):
            msg = f"unknown timezone {self.timezone!r} (use e.g. Europe/Madrid)"
            raise ValueError(msg) from None

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)  # ZoneInfo caches instances per key
