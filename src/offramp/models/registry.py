"""Model families by name: each family registers itself, and the model store looks it up.

The store never imports a family, so a new family is one module that calls
:func:`register_family`; ``offramp.models`` imports the built-in ones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from offramp.models.base import TextClassifier

_FAMILIES: dict[str, type[TextClassifier]] = {}

T = TypeVar("T", bound="type[TextClassifier]")


def register_family(cls: T) -> T:
    """Class decorator: make ``cls`` loadable from a model directory whose family is ``cls.family``."""
    name = cls.family
    if not name:
        raise ValueError(f"{cls.__name__} has no family name")
    if name in _FAMILIES and _FAMILIES[name] is not cls:
        raise ValueError(f"model family {name!r} is registered twice")
    _FAMILIES[name] = cls
    return cls


def family_class(name: str) -> type[TextClassifier] | None:
    """The class registered under ``name``, or None."""
    return _FAMILIES.get(name)
