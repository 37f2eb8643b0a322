"""The fixed instants the tests use, and a clock a test can move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

NOW = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)
LATER = NOW + timedelta(days=365)


class Clock:
    """A clock that reads :attr:`now`; tests set it to move time."""

    def __init__(self, now: datetime = NOW) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now
