"""The one place text passes before it leaves the machine for an LLM endpoint or a webhook.

An :class:`EgressPolicy` is handed to every LLM client and network action; it decides, per
destination, whether text may go at all and how it is masked on the way:

* ``offline``: any host that is not loopback is refused before a byte is sent;
* ``guard_mode``: where the guard applies: ``remote`` (hosts that are not loopback),
  ``always`` (loopback too, e.g. a local LLM whose logs you do not control) or ``off``;
* ``guard``: the masking function (a pipeline's ``privacy:`` guard; by default the pattern guard
  with typed placeholders: e-mails, phones, cards, IBANs, IPs, national IDs, dates of birth, URLs).

Outside a pipeline, :meth:`EgressPolicy.from_env` reads ``OFFRAMP_OFFLINE`` and
``OFFRAMP_EGRESS_GUARD``; a pipeline's settings build the policy its cascade uses, so nothing here
is process-wide and a reload starts from the new settings.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable
from urllib.parse import urlsplit

from offramp.errors import OfframpError

GUARD_MODES = ("remote", "always", "off")
OFFLINE_ENV = "OFFRAMP_OFFLINE"
GUARD_ENV = "OFFRAMP_EGRESS_GUARD"


class EgressRefused(OfframpError):
    """The policy forbids sending anything to this destination (offline mode)."""

    exit_code = 2


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def env_flag(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def guard_mode_from(value: str | None, source: str = GUARD_ENV) -> str:
    mode = (value or "remote").strip().lower() or "remote"
    if mode not in GUARD_MODES:
        raise EgressRefused(
            f"{source}={mode!r} is not one of {', '.join(GUARD_MODES)}", "set it to remote (the default), always or off"
        )
    return mode


def default_guard() -> Callable[[str], str]:
    """The pattern guard with typed placeholders (what applies when no pipeline says otherwise)."""
    from offramp.privacy.guard import PrivacyGuard

    return PrivacyGuard()


@dataclass(frozen=True)
class EgressPolicy:
    """Whether and how text may leave the machine; see the module docstring."""

    offline: bool = False
    guard_mode: str = "remote"
    guard: Callable[[str], str] | None = None  # None: nothing is masked

    def __post_init__(self) -> None:
        guard_mode_from(self.guard_mode, "guard_mode")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, guard: Callable[[str], str] | None = None) -> EgressPolicy:
        """The policy the environment sets, with ``guard`` (default: the pattern guard)."""
        env = os.environ if env is None else env
        return cls(
            offline=env_flag(env.get(OFFLINE_ENV)),
            guard_mode=guard_mode_from(env.get(GUARD_ENV)),
            guard=guard if guard is not None else default_guard(),
        )

    def check(self, url: str, texts: list[str]) -> list[str]:
        """The texts as they may be sent to ``url`` (masked where the policy says), or EgressRefused."""
        local = is_loopback(url)
        if self.offline and not local:
            raise EgressRefused(
                f"offline mode (OFFRAMP_OFFLINE or offline: true) forbids sending anything to {urlsplit(url).hostname}",
                "use an LLM server on this machine (127.0.0.1) or unset OFFRAMP_OFFLINE",
            )
        if self.guard is None or self.guard_mode == "off" or (local and self.guard_mode == "remote"):
            return texts
        return [self.guard(t) for t in texts]
