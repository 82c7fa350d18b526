"""The one place text passes before it leaves the machine for an LLM endpoint.

Every request the LLM client sends goes through :func:`check_egress` first:

* with ``OFFRAMP_OFFLINE=1`` any host that is not loopback is refused before a byte is sent;
* text bound for a host that is not loopback passes the privacy guard registered with
  :func:`set_guard`; with none registered, the default guard (pattern recognizers, typed
  placeholders: e-mails, phones, cards, IBANs, IPs, national IDs, dates of birth, URLs).

``OFFRAMP_EGRESS_GUARD`` sets where the guard applies: ``remote`` (the default: hosts that are not
loopback), ``always`` (loopback too, e.g. a local LLM whose logs you do not control) or ``off``
(text goes unchanged, say to an endpoint inside your own network).
"""

from __future__ import annotations

import ipaddress
import os
from typing import Callable
from urllib.parse import urlsplit

from offramp.errors import OfframpError

_guard: Callable[[str], str] | None = None
_offline = False
GUARD_MODES = ("remote", "always", "off")


class EgressRefused(OfframpError):
    exit_code = 2


def set_guard(guard: Callable[[str], str] | None) -> None:
    global _guard
    _guard = guard


def set_offline(on: bool) -> None:
    """Air-gapped mode from configuration (the pipeline's ``offline: true``), as OFFRAMP_OFFLINE=1."""
    global _offline
    _offline = bool(on)


def is_offline() -> bool:
    return _offline or os.environ.get("OFFRAMP_OFFLINE", "").strip().lower() in ("1", "true", "yes")


def is_loopback(url: str) -> bool:
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_egress(url: str, texts: list[str]) -> list[str]:
    """The texts as they may be sent to ``url`` (guarded), or EgressRefused in offline mode."""
    local = is_loopback(url)
    if is_offline() and not local:
        raise EgressRefused(f"offline mode (OFFRAMP_OFFLINE or offline: true) forbids sending anything to {urlsplit(url).hostname}",
                            "use an LLM server on this machine (127.0.0.1) or unset OFFRAMP_OFFLINE")
    mode = os.environ.get("OFFRAMP_EGRESS_GUARD", "remote").strip().lower() or "remote"
    if mode not in GUARD_MODES:
        raise EgressRefused(f"OFFRAMP_EGRESS_GUARD={mode!r} is not one of {', '.join(GUARD_MODES)}",
                            "set it to remote (the default), always or off")
    if mode == "off" or (local and mode == "remote"):
        return texts
    guard = _guard if _guard is not None else _default_guard()
    return [guard(t) for t in texts]


_default = None


def _default_guard():
    global _default
    if _default is None:
        from offramp.privacy.guard import PrivacyGuard

        _default = PrivacyGuard()
    return _default
