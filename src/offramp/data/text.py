"""Text normalisation shared by the readers, the data checks and the featurizer."""

from __future__ import annotations

import re
import unicodedata

# zero-width and invisible formatting characters that split a word without showing
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")


def normalize(text: str) -> str:
    """Lower-case and collapse runs of white space to one space."""
    return " ".join(text.lower().split())


def fold_width(text: str) -> str:
    """Unicode NFKC (full-width letters, digits and punctuation become their usual forms, as CJK
    input methods often type them) without invisible characters (zero-width spaces, soft hyphens)."""
    if text.isascii():
        return text
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text))


def clean_text(s: str) -> str:
    """``s`` with lone surrogates (legal in JSON escapes, not in UTF-8) replaced by U+FFFD."""
    try:
        s.encode("utf-8")
        return s
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in s)
