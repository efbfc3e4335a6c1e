"""The documentation cannot drift from the code: README.md, every page under docs/, benchmarks/README.md
and CHANGELOG.md are read as GitHub shows them, and

- every relative link resolves, and its #anchor is a heading of the page it names (GitHub's rule);
- every `python -m vago_lightning VERB ...`, `vago-lightning VERB ...` and `train.py fit ...` in a code
  block is accepted by the real parsers: a tool verb by `commands.normalize` and the parser `__main__`
  builds (the verb's function is swapped for one that records its arguments, so nothing heavy runs),
  `fit`/`validate` by the LightningCLI of `training/cli.py` (`--print_config`: parsed and validated,
  config files included, nothing instantiated);
- every config key a table names (a table whose first column is "key") is a key of `finetune.yaml`'s
  schema, every `--section.key` anywhere is one too, every `--flag` in a verb's table row (a cell that
  starts with the verb, or a table headed "flag of `VERB`") is a flag of that verb.

Pages and verbs added later are picked up without editing this file.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from vago_lightning import commands
from vago_lightning.__main__ import TRAINING_VERBS, main

REPO = Path(__file__).resolve().parent.parent
PAGES = sorted(
    {REPO / "README.md", REPO / "CHANGELOG.md", REPO / "benchmarks" / "README.md", *(REPO / "docs").rglob("*.md")}
)
SHELL_BLOCKS = {"", "sh", "bash", "shell", "console", "bat", "cmd", "powershell", "ps1"}
WINDOWS_BLOCKS = {"bat", "cmd", "powershell", "ps1"}


# ---------------------------------------------------------------------------------------------
# Reading a page as GitHub renders it


@dataclass
class Block:
    lang: str
    line: int  # of its first line in the page
    lines: list[str]


@dataclass
class Page:
    path: Path
    prose: list[tuple[int, str]]  # (line number, text) outside code blocks, HTML comments removed
    blocks: list[Block]

    @property
    def name(self) -> str:
        return str(self.path.relative_to(REPO))


def read_page(path: Path) -> Page:
    text = re.sub(r"<!--.*?-->", lambda m: "\n" * m.group(0).count("\n"), path.read_text(encoding="utf-8"), flags=re.S)
    prose, blocks, block = [], [], None
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"^\s*```\s*([\w+-]*)", line)
        if fence and block is None:
            block = Block(fence.group(1).lower(), number + 1, [])
        elif fence:
            blocks.append(block)
            block = None
        elif block is not None:
            block.lines.append(line)
        else:
            prose.append((number, line))
    return Page(path, prose, blocks)


def slug(heading: str) -> str:
    """GitHub's anchor of a heading: its text (code spans and link texts kept, emphasis marks gone),
    lower case, every character that is not a letter, digit, `_`, `-` or space dropped, spaces to `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)
    text = text.replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(page: Page) -> set[str]:
    found, seen = set(), {}
    for _, line in page.prose:
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`]+)`", text)


def tables(page: Page) -> list[list[tuple[int, list[str]]]]:
    """Each table as its rows, (line number, cells), the header first and the separator row left out."""
    found, current = [], []
    for number, line in [*page.prose, (0, "")]:
        if line.lstrip().startswith("|"):
            current.append((number, line))
            continue
        if len(current) >= 2 and re.match(r"^\s*\|[\s:|-]+\|\s*$", current[1][1]):
            found.append([(n, _cells(text)) for n, text in [current[0], *current[2:]]])
        current = []
    return found


def _cells(line: str) -> list[str]:
    cells = re.split(r"(?<!\\)\|", line.strip().strip("|"))
    return [c.strip().replace("\\|", "|") for c in cells]


LOADED = {path: read_page(path) for path in PAGES}


# ---------------------------------------------------------------------------------------------
# Links and anchors


def _links(page: Page) -> list[tuple[int, str]]:
    found = []
    for number, line in page.prose:
        line = re.sub(r"`[^`]*`", "", line)  # a link inside a code span is text
        found += [(number, target) for target in re.findall(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", line)]
        found += [(number, target) for target in re.findall(r"^\s*\[[^\]]+\]:\s*(\S+)", line)]
    return found


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_link_and_anchor_resolves(path):
    page, wrong = LOADED[path], []
    for number, target in _links(page):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:: not ours to check
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            wrong.append(f"{page.name}:{number}: {target}: {resolved.relative_to(REPO)} does not exist")
        elif anchor and resolved.suffix == ".md":
            known = anchors(LOADED.get(resolved) or read_page(resolved))
            if anchor not in known:
                wrong.append(f"{page.name}:{number}: {target}: no heading with the anchor #{anchor} there")
    assert not wrong, "\n".join(wrong)


def test_the_anchor_rule_is_githubs():
    assert slug("What `prepare` checks and writes") == "what-prepare-checks-and-writes"
    assert slug("Config keys (`finetune.yaml`)") == "config-keys-finetuneyaml"
    assert slug("bench_prepare.py: audio-seconds prepared per wall-second") == (
        "bench_preparepy-audio-seconds-prepared-per-wall-second"
    )
    assert slug("Fine-tuning on an 8 GB card: LoRA and an 8-bit optimizer") == (
        "fine-tuning-on-an-8-gb-card-lora-and-an-8-bit-optimizer"
    )
    assert anchors(Page(Path("x"), [(1, "## A"), (2, "## A")], [])) == {"a", "a-1"}


# ---------------------------------------------------------------------------------------------
# Commands in code blocks

INVOCATION = re.compile(
    r"(?:^|(?<=[\s;&|(]))(?:(?:\S*[/\\])?(?:python(?:3(?:\.\d+)?)?(?:\.exe)?|py(?:\s+-\d[\d.]*)?)\s+"
    r"(?:-m\s+vago_lightning|(?P<script>\S*train\.py))|vago-lightning)(?=\s|$)(?P<rest>.*)"
)


@dataclass
class Command:
    page: str
    line: int
    argv: list[str]
    script: bool  # train.py rather than the package

    def __str__(self) -> str:
        return f"{self.page}:{self.line}: {' '.join(self.argv)}"


def commands_in(page: Page) -> list[Command]:
    found = []
    for block in page.blocks:
        if block.lang not in SHELL_BLOCKS:
            continue
        windows = block.lang in WINDOWS_BLOCKS
        for number, line in _logical_lines(block, windows):
            match = INVOCATION.search(line)
            if match:
                found.append(Command(page.name, number, _argv(match.group("rest"), windows), bool(match["script"])))
    return found


def _logical_lines(block: Block, windows: bool) -> list[tuple[int, str]]:
    """The block's lines with `\\` (or `^` on Windows) continuations joined and `$ ` prompts removed."""
    joined, start, parts = [], None, []
    for offset, line in enumerate(block.lines):
        if start is None:
            start = block.line + offset
        stripped = line.rstrip()
        tail = "^" if windows else "\\"
        if stripped.endswith(tail):
            parts.append(stripped[:-1])
            continue
        parts.append(stripped)
        joined.append((start, re.sub(r"^\s*\$\s+", "", " ".join(p.strip() for p in parts))))
        start, parts = None, []
    return joined


def _argv(rest: str, windows: bool) -> list[str]:
    lexer = shlex.shlex(rest, posix=not windows, punctuation_chars=";&|<>")
    lexer.whitespace_split, lexer.commenters = True, "#"
    argv = []
    for token in lexer:
        if token and set(token) <= set(";&|<>"):
            break  # the next command of a pipe or a list
        argv.append(token.strip("\"'") if windows else token)
    return argv


ALL_COMMANDS = [command for page in LOADED.values() for command in commands_in(page)]


def test_the_docs_hold_commands_to_check():
    assert {"README.md", "docs/preparing-data.md", "docs/training.md"} <= {c.page for c in ALL_COMMANDS}
    assert any(c.argv[:1] == ["fit"] for c in ALL_COMMANDS) and any(c.argv[:1] == ["prepare"] for c in ALL_COMMANDS)


def _recording(function):
    """`function`'s signature and docstring (its flags and --help), recording its arguments instead of
    running it."""

    @functools.wraps(function)
    def record(*args, **kwargs):
        record.calls.append(kwargs)

    record.calls = []
    return record


def tool_problem(argv: list[str], monkeypatch, capsys) -> str | None:
    """None when `python -m vago_lightning ARGV` parses as a tool verb; else what it said."""
    verb = argv[0]
    if verb not in commands.VERBS:
        return None if verb in ("--help", "-h", "--version") else f"unknown verb {verb!r}"
    recorder = _recording(commands.VERBS[verb])
    monkeypatch.setitem(commands.VERBS, verb, recorder)
    capsys.readouterr()
    try:
        code = main(argv)
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err.strip()
    if code not in (0, None):
        return err or f"exit status {code}"
    if not recorder.calls and "--help" not in argv and "-h" not in argv:
        return "the verb's function was not reached"
    return None


def training_problem(argv: list[str], monkeypatch, capsys) -> str | None:
    """None when `train.py ARGV` parses and validates in the LightningCLI (from the repository root,
    where the configs' relative paths point); else its one-line error."""
    from vago_lightning.training.cli import cli_main

    if argv[0] not in TRAINING_VERBS:
        return f"{argv[0]!r} is not a training verb ({', '.join(TRAINING_VERBS)})"
    monkeypatch.chdir(REPO)
    monkeypatch.setattr("sys.argv", ["train.py"])
    capsys.readouterr()
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            cli_main([*argv, "--print_config"])
    except SystemExit as exit_:
        if exit_.code in (0, None):
            return None
        return capsys.readouterr().err.strip() or str(exit_.code)
    return "--print_config did not end the parse"


@pytest.mark.parametrize("command", ALL_COMMANDS, ids=str)
def test_every_command_in_a_code_block_is_accepted_by_its_parser(command, monkeypatch, capsys):
    if command.script or command.argv[0] in TRAINING_VERBS:
        problem = training_problem(command.argv, monkeypatch, capsys)
    else:
        problem = tool_problem(command.argv, monkeypatch, capsys)
    assert problem is None, f"{command}\n  -> {problem}"


# ---------------------------------------------------------------------------------------------
# Config keys and flags named in tables (and --section.key anywhere)


@functools.cache
def config_keys() -> frozenset[str]:
    """Every key of finetune.yaml's schema as the LightningCLI prints it, dotted, nested ones too."""
    from vago_lightning.training.cli import cli_main

    out, argv, cwd = io.StringIO(), sys.argv, Path.cwd()
    sys.argv = ["train.py"]
    try:
        os.chdir(REPO)
        with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
            # Every shipped config over finetune.yaml, so that keys a default leaves empty (model.lora)
            # are printed with their own keys.
            shipped = [arg for path in sorted(Path("configs").glob("*.yaml")) for arg in ("--config", str(path))]
            cli_main(["fit", "--config", "finetune.yaml", *shipped, "--print_config"])
    finally:
        sys.argv = argv
        os.chdir(cwd)
    keys = set()

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                name = f"{prefix}.{key}" if prefix else str(key)
                keys.add(name)
                walk(name, inner)
                if key == "init_args":  # a class's own arguments, as the flags name them
                    walk(prefix, inner)

    walk("", yaml.safe_load(out.getvalue()))
    return frozenset(keys)


def _is_key(name: str, keys: frozenset[str]) -> bool:
    if name.endswith(".*"):
        return any(k.startswith(name[:-1]) for k in keys)
    return name in keys


def _flags_of(verb: str) -> set[str]:
    return set(inspect.signature(commands.VERBS[verb]).parameters) | {"help", "config", "print_config"}


KEY = re.compile(r"^[a-z_]+(?:\.[a-z0-9_]+)*(?:\.\*)?$")


def key_problems(page: Page) -> list[str]:
    keys, wrong = config_keys(), []
    sections = {k.split(".")[0] for k in keys if "." in k}
    for table in tables(page):
        header = table[0][1][0]
        verb = re.match(r"flag of `([\w-]+)`", header)
        for line, row in table[1:]:
            first = code_spans(row[0])
            if header.lower() == "key":
                parent = None
                for span in first:
                    name = span.split()[0]
                    if not KEY.match(name):
                        continue
                    if "." not in name and name not in keys and parent:
                        name = f"{parent}.{name}"  # `model.lr_schedule`, `warmup_steps`: a sibling
                    if "." in name:
                        parent = name.rsplit(".", 1)[0]
                    if not _is_key(name, keys):
                        wrong.append(f"{page.name}:{line}: config key `{name}` is not in finetune.yaml's schema")
            if verb:
                for span in first:
                    flag = span.split()[0]
                    if flag.startswith("--") and flag[2:].replace("-", "_") not in _flags_of(verb.group(1)):
                        wrong.append(f"{page.name}:{line}: `{verb.group(1)}` has no flag {flag}")
            for cell in row:
                for span in code_spans(cell):
                    words = span.split()
                    if words and words[0] in commands.VERBS and len(words) > 1:
                        flags = {w.split("=")[0][2:].replace("-", "_") for w in re.findall(r"--[\w-]+(?:=\S*)?", span)}
                        for flag in sorted(flags - _flags_of(words[0])):
                            wrong.append(f"{page.name}:{line}: `{words[0]}` has no flag --{flag}")
    for line, text in _paragraphs(page):
        for span in code_spans(text):
            for flag in re.findall(r"(?:^|\s)--([a-z_]+\.[a-z0-9_.]+)", span):
                if flag.split(".")[0] in sections and flag.rstrip(".") not in keys:
                    wrong.append(f"{page.name}:{line}: `--{flag}` is not a key of finetune.yaml's schema")
    return wrong


def _paragraphs(page: Page) -> list[tuple[int, str]]:
    """(first line, text) of each run of prose lines (a code span may wrap onto the next line)."""
    found, start, lines = [], None, []
    for number, line in [*page.prose, (0, "")]:
        if line.strip() and (not lines or number == start + len(lines)):
            start = number if not lines else start
            lines.append(line)
            continue
        if lines:
            found.append((start, " ".join(lines)))
        start, lines = (number, [line]) if line.strip() else (None, [])
    return found


@pytest.mark.parametrize("path", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_config_key_and_flag_named_exists(path):
    problems = key_problems(LOADED[path])
    assert not problems, "\n".join(problems)


def test_the_config_schema_is_read_whole():
    keys = config_keys()
    assert {"run", "fresh", "trainer.precision", "model.lr", "model.lora.r", "data.batch_size", "guard"} <= keys
    assert "model.lrr" not in keys
