"""Write docs/reference/cli.md from the commands themselves (what `offramp COMMAND --help` says).

    python3 scripts/cli_reference.py            write the page
    python3 scripts/cli_reference.py --check    exit 1 if the page is not what the commands say

The test suite runs the check, so the page cannot drift from the code.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer

PAGE = Path(__file__).resolve().parents[1] / "docs" / "reference" / "cli.md"

INTRO = """\
# Command reference

This page is generated from the commands (`python3 scripts/cli_reference.py`); `offramp COMMAND
--help` prints the same.

Every command follows one grammar: the input data is positional; every path a command writes is
`-o/--out`; `--json` prints one JSON object on stdout and nothing else there (`serve` and
`llm-server` write JSON log lines); `-q/--quiet` leaves out progress and information on stderr
(warnings still show); `--model` is a model directory or a registry, and nothing else; a flag
name means one thing, with one default, in every command. A spelling that was renamed keeps
working and prints one line on stderr saying what replaced it (the older spellings are listed
under each command).

Exit codes: 0 ok; 2 bad usage or data (one line naming the problem and the fix, and the option it
is about); 3 a failed verification (`audit verify`, `audit export` of a broken chain); 4 a
candidate refused by the regression gate (`registry retrain`: a decision, not an error); 1 an
internal error (`OFFRAMP_DEBUG=1` shows the traceback); 130 interrupted.

Commands that write CSV or TSV neutralise text a spreadsheet would run as a formula (a leading
`=`, `+`, `-`, `@`, tab or carriage return gets an apostrophe, OWASP's rule); `--raw-csv` writes
the cells as they are.

Each command group is one module of `offramp.cli`, named after the library package it calls
(`training`, `evaluation`, `scale`, `llm`, `registry`, `monitoring`, `capture`, `privacy`,
`audit`, `costs`, `serving`, `demo`, `encoders`).
"""


def commands() -> list[tuple[str, Any]]:
    """(full name, click command) of every visible command, in the order of `offramp --help`."""
    from offramp.cli.main import app

    root = typer.main.get_command(app)
    found: list[tuple[str, Any]] = []

    def walk(cmd: Any, prefix: str) -> None:
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                if not getattr(sub, "hidden", False):
                    walk(sub, f"{prefix} {name}".strip())
        else:
            found.append((prefix, cmd))

    walk(root, "")
    return found


def _default(p: Any) -> str:
    if p.required:
        return "required"
    d = p.default
    if d is None or d is False or (isinstance(d, (list, tuple)) and not d):
        return ""
    if getattr(p, "is_flag", False) and d is True:
        return p.opts[0]
    return f"`{d}`"


def _arg(p: Any) -> str:
    return p.name.upper() + ("..." if p.nargs == -1 else "")


def render() -> str:
    lines = [INTRO]
    for name, cmd in commands():
        params = list(cmd.params)
        args = [p for p in params if p.param_type_name == "argument"]
        opts = [p for p in params if p.param_type_name == "option" and not p.hidden and p.name != "help"]
        old = [p for p in params if p.param_type_name == "option" and p.hidden]
        usage = " ".join([f"offramp {name}"] + [(_arg(p) if p.required else f"[{_arg(p)}]") for p in args])
        lines += [f"## `{name}`", "", f"`{usage}`", ""]
        doc = (cmd.help or "").strip()
        if doc:
            lines += [" ".join(part.split()) for part in doc.split("\n\n")]
            lines.append("")
        if args:
            lines += ["| argument | |", "|---|---|"]
            for p in args:
                lines.append(f"| `{_arg(p)}` | {' '.join((getattr(p, 'help', '') or '').split())} |")
            lines.append("")
        lines += ["| option | default | |", "|---|---|---|"]
        for p in opts:
            names = ", ".join(f"`{n}`" for n in p.opts + p.secondary_opts)
            text = " ".join((p.help or "").split()).replace("|", "\\|")
            lines.append(f"| {names} | {_default(p)} | {text} |")
        lines.append("")
        if old:
            lines.append("Older spellings, still accepted: " + ", ".join(f"`{n}`" for p in old for n in p.opts) + ".")
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def main(argv: list[str]) -> int:
    text = render()
    if "--check" in argv:
        if PAGE.read_text(encoding="utf-8") != text:
            print(f"{PAGE} is not what the commands say; run: python3 scripts/cli_reference.py", file=sys.stderr)
            return 1
        return 0
    PAGE.write_text(text, encoding="utf-8")
    print(f"wrote {PAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
