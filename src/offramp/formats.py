"""Small rules about output formats that more than one layer needs (the bottom layer: no imports)."""

from __future__ import annotations

from typing import Any

# a spreadsheet runs a cell that starts with one of these as a formula (OWASP, CSV injection)
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_safe(value: Any) -> Any:
    """``value`` as a CSV cell a spreadsheet will not run: text that starts like a formula gets a
    leading apostrophe (OWASP's rule); anything else is returned unchanged.

    >>> csv_safe("=HYPERLINK(\\"http://x\\")"), csv_safe("thanks"), csv_safe(3)
    ('\\'=HYPERLINK("http://x")', 'thanks', 3)
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        return "'" + value
    return value


def markdown_cell(value: Any) -> str:
    """``value`` as the text of a Markdown table cell: HTML and the column separator escaped, one line."""
    text = str(value)
    for raw, safe in (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"), ("|", "\\|"), ("\r", " "), ("\n", " ")):
        text = text.replace(raw, safe)
    return text
