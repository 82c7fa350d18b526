"""Every command follows one grammar (offramp.cli.options): a new command cannot break it.

Walks every visible command of the real CLI and checks: --json and -q/--quiet everywhere; -o/--out
for what a command writes (and -o for nothing else); the input is positional (no --input, --data,
--add options); a flag name has one meaning (the first sentence of its help) and one default in
every command; the older spellings work, print one line on stderr, and give the same stdout as the
new ones. The command reference page is what the commands say."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from offramp.cli import options as o
from offramp.cli.main import app, run

ROOT = Path(__file__).resolve().parents[1]
# commands that write a file or a directory: each takes -o/--out
WRITERS = {
    "train",
    "check-labels",
    "predict",
    "report",
    "eval-llm",
    "label",
    "import-logs",
    "mask",
    "pool export",
    "audit export",
    "demo",
}
# input given as an option instead of positionally (or another renamed spelling): never visible
FORBIDDEN = {"--input", "--output", "--data", "--add", "--predictions", "--model-dir", "--max-text-chars"}
# one flag, two defaults on purpose: the two servers must not listen on the same port by default
DEFAULTS_DIFFER = {"--port", "--from"}
# the path a command writes differs by command (a file, a directory): one meaning, its own words;
# --from is the source a command reads from (the pool's row origins, the encoder a table is distilled from)
HELP_DIFFERS = {"--out", "--from"}


def _commands():
    root = typer.main.get_command(app)
    found = []

    def walk(cmd, prefix):
        subs = getattr(cmd, "commands", None)
        if subs:
            for name, sub in subs.items():
                if not getattr(sub, "hidden", False):
                    walk(sub, f"{prefix} {name}".strip())
        else:
            found.append((prefix, cmd))

    walk(root, "")
    return found


COMMANDS = _commands()


def _visible(cmd):
    return [p for p in cmd.params if p.param_type_name == "option" and not p.hidden and p.name != "help"]


def _first_sentence(text: str) -> str:
    text = " ".join((text or "").split())
    return re.split(r"(?<=[.)])\s", text, maxsplit=1)[0]


def test_every_command_is_walked():
    names = {n for n, _ in COMMANDS}
    assert {"train", "eval", "predict", "serve", "registry retrain", "pool export", "shadow report"} <= names
    assert len(names) >= 24


@pytest.mark.parametrize("name,cmd", COMMANDS, ids=[n for n, _ in COMMANDS])
def test_one_grammar(name, cmd):
    opts = {n: p for p in _visible(cmd) for n in p.opts}
    assert "--json" in opts and opts["--json"].help == o.JSON.help, name
    assert "--quiet" in opts and "-q" in opts["--quiet"].opts and opts["--quiet"].help == o.QUIET.help, name
    assert not FORBIDDEN & set(opts), (name, FORBIDDEN & set(opts))
    if "-o" in opts:
        assert opts["-o"].opts == ["--out", "-o"] or set(opts["-o"].opts) == {"--out", "-o"}, name
    if name in WRITERS:
        assert "--out" in opts and "-o" in opts["--out"].opts, name
    if "--model" in opts:  # a model directory or a registry, and nothing else
        assert opts["--model"].help.startswith(o.MODEL.help), name


def test_a_flag_means_one_thing_everywhere():
    seen: dict[str, tuple[str, str, object]] = {}
    problems = []
    for name, cmd in COMMANDS:
        for p in _visible(cmd):
            flag = p.opts[0]
            meaning = _first_sentence(p.help)
            default = None if p.required else p.default
            if flag not in seen:
                seen[flag] = (name, meaning, default)
                continue
            first, first_meaning, first_default = seen[flag]
            if flag not in HELP_DIFFERS and meaning != first_meaning:
                problems.append(f"{flag}: {first!r} says {first_meaning!r}, {name!r} says {meaning!r}")
            if (
                flag not in DEFAULTS_DIFFER
                and not p.required
                and first_default is not None
                and default != first_default
            ):
                problems.append(f"{flag}: default {first_default!r} in {first!r}, {default!r} in {name!r}")
    assert not problems, "\n".join(problems)


def _run(argv, capsys):
    """The CLI in this process: (exit code, stdout, stderr); each run names its deprecated spellings
    again, whatever ran before it in the process."""
    with pytest.raises(SystemExit) as e:
        run(argv)
    got = capsys.readouterr()
    return e.value.code, got.out, got.err


def _deprecations(err: str) -> list[str]:
    return [line for line in err.splitlines() if "is deprecated; use" in line]


def test_older_spellings_work_and_say_so_once(fast_model, inbox_sample, tmp_path, capsys):
    test = str(inbox_sample[1])
    pairs = [  # (older spelling, newer spelling, older spellings used: one line each)
        (["cost", "--messages-per-day", "1000", "--model", "gpt-4o", "--json"],
         ["cost", "--messages-per-day", "1000", "--llm", "gpt-4o", "--json"], 1),
        (["cost", "--data", test, "--model-dir", str(fast_model), "--json"],
         ["cost", test, "--model", str(fast_model), "--json"], 2),
        (["predict", str(fast_model), "--input", test, "--top", "2"],
         ["predict", str(fast_model), test, "--top", "2"], 1),
        (["check-labels", test, "--top", "3", "--quality", "fast"],
         ["check-labels", test, "--show", "3", "--quality", "fast"], 1),
    ]  # fmt: skip
    for old, new, used in pairs:
        code_old, out_old, err_old = _run(old, capsys)
        code_new, out_new, err_new = _run(new, capsys)
        assert code_old == code_new == 0, (old, err_old, err_new)
        assert len(_deprecations(err_old)) == used and not _deprecations(err_new), (old, err_old)
        if "--json" in new and new[0] == "cost":
            assert json.loads(out_old)["rows"] == json.loads(out_new)["rows"]
        elif new[0] == "check-labels":  # the run's duration differs; the suspects do not
            assert (
                out_old.split("; ")[0] == out_new.split("; ")[0]
                and out_old.splitlines()[1:] == out_new.splitlines()[1:]
            )
        else:
            assert out_old == out_new, old
    # predict --output: the same file
    code, _, err = _run(["predict", str(fast_model), "--input", test, "--output", str(tmp_path / "a.jsonl")], capsys)
    assert code == 0 and len(_deprecations(err)) == 2  # two older spellings: one line each
    code, _, err = _run(["predict", str(fast_model), test, "-o", str(tmp_path / "b.jsonl")], capsys)
    assert code == 0 and not _deprecations(err)
    assert (tmp_path / "a.jsonl").read_text() == (tmp_path / "b.jsonl").read_text()
    # renamed options of commands that reach the network or a server: parsed, said, and the same error
    for old, new, message in [
        (["serve", str(tmp_path / "none"), "--max-text-chars", "9"], ["serve", str(tmp_path / "none"), "--max-chars", "9"], "does not exist"),
        (["serve", str(tmp_path / "none"), "--llm-price-model", "gpt-4o"], ["serve", str(tmp_path / "none"), "--price-model", "gpt-4o"], "does not exist"),
        (["demo", "--max-chars", "100", "--llm", "m"], ["demo", "--send-chars", "100", "--llm", "m"], "go together"),
        (["llm-server", "--model", "no-such-llm", "--path"], ["llm-server", "--llm", "no-such-llm", "--path"], "no-such-llm"),
    ]:  # fmt: skip
        code_old, _, err_old = _run(old, capsys)
        code_new, _, err_new = _run(new, capsys)
        assert code_old == code_new == 2, (old, err_old)
        assert message in err_old and message in err_new
        assert len(_deprecations(err_old)) == 1 and not _deprecations(err_new), (old, err_old)


def test_retrain_keeps_its_old_place(tmp_path, capsys):
    code, _, err = _run(["retrain", str(tmp_path / "reg"), "--add", str(tmp_path / "x.csv")], capsys)
    assert code == 2 and len(_deprecations(err)) == 1 and "registry retrain" in err


def test_the_command_reference_is_what_the_commands_say():
    r = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "cli_reference.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
