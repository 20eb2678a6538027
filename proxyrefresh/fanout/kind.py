"""What a kind of run calls its things in Redis: each kind its own names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Kind:
    """A kind of run's names: its runs' keys are ``<key_prefix>:{<uid>}:*``
    and each run's Redis user is ``<user_prefix><uid>``. Two kinds sharing
    one Redis never touch each other's runs, nor hand out each other's users."""

    key_prefix: str
    user_prefix: str
