"""Account intent settings: how a buying committee's activity adds up."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AccountIntentConfig:
    """Account intent = decayed sum of members' points + breadth bonuses.

    ``per_person`` is added for each distinct person active within
    ``window_days``, ``per_role`` for each distinct buying-committee role
    (department) among them.  Crossing ``threshold`` makes the account's most
    engaged known lead sales-ready.
    """

    threshold: float = 150.0
    window_days: float = 14.0
    per_person: float = 10.0
    per_role: float = 15.0

    @property
    def window_s(self) -> float:
        return self.window_days * 86400.0
