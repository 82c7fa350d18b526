"""One exception family for everything a user can get wrong.

Each error carries a one-line message that names the problem, an optional hint that names the fix,
optionally the parameter it is about (``param``: the library's name, such as ``text_col``; the CLI
maps it to its option), and the process exit code the CLI uses (2: bad usage or data, 1: internal
failure).

The tree::

    OfframpError
    ├── UsageError          a parameter or setting that cannot work as given
    ├── DataError           a data file that is missing, unreadable or not usable for the task
    │   └── InputError      texts or labels handed to a model that it cannot use (also a ValueError)
    └── ModelDirError       a model directory that is missing, foreign, damaged or tampered with

Other modules add their own subclasses where a caller may want to catch the kind of failure:
``offramp.llm.client.LLMError`` (``LLMUnavailable``, ``LLMRateLimited``, ``LLMRequestRejected``,
``LLMBadResponse``), ``offramp.egress.policy.EgressRefused``,
``offramp.encoders.sentence.EncoderUnavailable``.
"""

from __future__ import annotations


class OfframpError(Exception):
    """Base class: a failure with a message meant for the person running offramp."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.param = param

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class UsageError(OfframpError):
    """A flag or argument that cannot work as given."""

    exit_code = 2


class DataError(OfframpError):
    """A data file that is missing, unreadable, or not usable for the task."""

    exit_code = 2


class ModelDirError(OfframpError):
    """A model directory that is missing, foreign, damaged or tampered with."""

    exit_code = 2


class InputError(DataError, ValueError):
    """Texts or labels handed to a model that it cannot use (a ValueError too, for scikit-learn tooling)."""
