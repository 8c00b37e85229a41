"""What the docs tell a user to type is what the CLI takes (issue 9/11, break12): every
`tir MODE --flag` named in README.md and docs/*.md is an option of that mode's parser, and every
command of a code block parses as written (choices, types and required options included) unless it
holds a character the docs use for something the reader fills in (square or angle brackets, an
ellipsis, a bar, `$` or `~`: :data:`PLACEHOLDER`). A doc naming a flag the CLI lacks,
or a CLI losing a flag the docs name, fails here. Parsing only: nothing runs."""
import argparse
import contextlib
import io
import re
import shlex
from pathlib import Path

import pytest

from tir.tools.cli import MODES

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: `tir MODE` followed by the rest of its command (up to a backtick or the line's end); not
#: `tir run/bench`, `tir-edge`, `tir run's`
COMMAND = re.compile(r"(?:^|[\s`(/])tir (%s)(?![\w/'-])([^`\n]*)" % "|".join(map(re.escape, MODES.names())))
#: where one command ends and prose or the next command starts
END = re.compile(r"\s#|\s&&\s|;\s|\s\|\s|\s\|$|\)|,\s|\.\s|\.$")
FLAG = re.compile(r"(?<![\w-])(--[a-z][a-z0-9-]*)")
PLACEHOLDER = re.compile(r"\[|<|\.\.\.|…|\||\$|~")


def _parser(mode, cache={}):
    if mode not in cache:
        parser = argparse.ArgumentParser(prog=f"tir {mode}", exit_on_error=False)
        MODES.load(mode).add_arguments(parser)
        cache[mode] = parser
    return cache[mode]


def _options(mode):
    return {o for action in _parser(mode)._actions for o in action.option_strings}


def _text(doc):
    return re.sub(r"\\\n\s*", " ", doc.read_text(encoding="utf-8"))  # shell line continuations joined


def code_lines(text):
    """The lines of the shell code blocks (```, ```bash, ```sh, ```console fences) of ``text``."""
    lines, fence = [], None
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            fence = line.lstrip()[3:].strip() if fence is None else None
        elif fence in ("", "bash", "sh", "console"):
            lines.append(line)
    return lines


def doc_commands(doc, blocks_only=False):
    """(line number, mode, the command after `tir MODE`) for each command the doc names: anywhere
    in its text, or (``blocks_only``) each code-block line that starts with a tir command."""
    text = _text(doc)
    if blocks_only:
        for number, line in enumerate(code_lines(text), 1):
            m = re.match(r"\s*(?:\$ )?(?:\S*/)?tir (%s)(?![\w/'-])(.*)" % "|".join(map(re.escape, MODES.names())), line)
            if m:
                yield number, m.group(1), re.split(r"\s#|\s&&\s|;\s|\s\|\s", m.group(2))[0].strip()
        return
    for number, line in enumerate(text.splitlines(), 1):
        for m in COMMAND.finditer(line):
            yield number, m.group(1), END.split(m.group(2))[0].strip()


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_flag_the_docs_name_is_an_option_of_its_mode(doc):
    missing = []
    for number, mode, rest in doc_commands(doc):
        known = _options(mode)
        missing += [f"line ~{number}: tir {mode} {flag}" for flag in FLAG.findall(rest) if flag not in known]
    assert missing == []


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_every_plain_code_block_command_parses(doc):
    bad = []
    for _, mode, rest in doc_commands(doc, blocks_only=True):
        if PLACEHOLDER.search(rest):
            continue
        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
                _parser(mode).parse_args(shlex.split(rest))
        except SystemExit as exc:
            if exc.code:
                bad.append(f"tir {mode} {rest}: {err.getvalue().strip().splitlines()[-1]}")
        except argparse.ArgumentError as exc:
            bad.append(f"tir {mode} {rest}: {exc}")
    assert bad == []


def test_the_check_sees_the_docs_commands_and_catches_a_missing_flag(tmp_path):
    # the two tests above must not pass by finding nothing: they see hundreds of commands, and a
    # made-up flag in a doc is reported
    found = [c for doc in DOCS for c in doc_commands(doc)]
    assert len(found) > 300 and {m for _, m, _ in found} >= {"run", "bench", "eval", "adapt", "calibrate", "deploy"}
    fake = tmp_path / "fake.md"
    fake.write_text("Run `tir bench --frames 3 --no-such-flag` and\n```bash\ntir deploy --set bogus\n```\n")
    assert [f for _, m, rest in doc_commands(fake) for f in FLAG.findall(rest) if f not in _options(m)] \
        == ["--no-such-flag"]
    with pytest.raises(argparse.ArgumentError, match="invalid choice: 'bogus'"):
        _, mode, rest = next(doc_commands(fake, blocks_only=True))
        _parser(mode).parse_args(shlex.split(rest))
