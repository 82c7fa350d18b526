"""Text normalisation shared by the readers, the data checks and the featurizer."""

from __future__ import annotations


def normalize(text: str) -> str:
    """Lower-case and collapse runs of white space to one space."""
    return " ".join(text.lower().split())


def clean_text(s: str) -> str:
    """``s`` with lone surrogates (legal in JSON escapes, not in UTF-8) replaced by U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
