"""The commands written in README.md and docs/*.md work as written.

Every shell command in a fenced ``bash`` block is read. ``yolact-lite ...`` (or
``python -m yolact_lite ...``, ``torchrun ... -m yolact_lite ...``) is parsed by that command's own
argument parser; ``python -m benchmarks.NAME`` and ``python scripts/NAME.py`` must exist and define
every option they are given; ``make TARGET`` must be a Makefile target. A block preceded by the
line ``<!-- runs in tests/docs/test_docs.py -->`` is also run, command by command, from the checkout,
and each command must exit 0 (keep those cheap: a ``--help``, one photo, the bundled data check);
a ``python`` block so marked runs as one script.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.paths import ROOT

DOC_FILES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN_MARK = "<!-- runs in tests/docs/test_docs.py -->"
FENCE = re.compile(r"^```(\w*)\s*$")


@dataclass(frozen=True)
class DocCommand:
    source: str  # "docs/x.md:12"
    argv: tuple
    run: bool


def _logical_lines(block: list[str]) -> list[str]:
    """Shell lines with backslash continuations joined and comments dropped."""
    out, pending = [], ""
    for raw in block:
        line = raw.rstrip()
        if not pending and line.lstrip().startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append(pending + line)
        pending = ""
    if pending:
        out.append(pending)
    return [ln for ln in out if ln.strip()]


def doc_commands(path: Path) -> list[DocCommand]:
    """Every command of the ``bash``/``sh``/``shell`` blocks of one markdown file."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found, i = [], 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        language, start = match.group(1), i + 1
        end = next(j for j in range(start, len(lines)) if lines[j].startswith("```"))
        if language in ("bash", "sh", "shell"):
            run = any(ln.strip() == RUN_MARK for ln in lines[max(0, i - 2):i])
            for text in _logical_lines(lines[start:end]):
                argv = tuple(shlex.split(text, comments=True))
                if argv:
                    found.append(DocCommand(f"{path.relative_to(ROOT)}:{start + 1}", argv, run))
        i = end + 1
    return found


ALL_COMMANDS = [c for path in DOC_FILES for c in doc_commands(path)]


def python_blocks(path: Path) -> list[tuple[str, str]]:
    """``(where, code)`` of the ``python`` blocks of one markdown file marked to run."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for i, line in enumerate(lines):
        if FENCE.match(line) and FENCE.match(line).group(1) == "python" and RUN_MARK in lines[max(0, i - 2):i]:
            end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
            found.append((f"{path.relative_to(ROOT)}:{i + 2}", "\n".join(lines[i + 1:end])))
    return found


PYTHON_BLOCKS = [b for path in DOC_FILES for b in python_blocks(path)]


def _cli_argv(argv: tuple) -> list[str] | None:
    """The arguments after the ``yolact-lite`` program, or None for another program."""
    if argv[0] == "yolact-lite":
        return list(argv[1:])
    if "-m" in argv and argv[0] in ("python", "python3", "torchrun"):
        at = argv.index("-m")
        if at + 1 < len(argv) and argv[at + 1] == "yolact_lite":
            return list(argv[at + 2:])
    return None


def _parse_cli(args: list[str]) -> None:
    from yolact_lite.cli.main import COMMANDS, _resolve

    if args in ([], ["--help"], ["-h"]):
        return
    name, rest = _resolve(args)
    assert name is not None, f"unknown command {args[:2]}"
    module = importlib.import_module(COMMANDS[name][0])
    if "--help" in rest or "-h" in rest:
        return
    module.build_parser().parse_args(rest)


def _options(argv: tuple) -> list[str]:
    return [a.split("=", 1)[0] for a in argv if a.startswith("--")]


def _check_script_options(source_file: Path, argv: tuple) -> None:
    text = source_file.read_text(encoding="utf-8")
    for option in _options(argv):
        assert f'"{option}"' in text or f"'{option}'" in text, f"{source_file.name} has no option {option}"


def _check_command(cmd: DocCommand) -> str:
    """Parse one command; returns what kind it was (for the coverage assertion)."""
    argv = cmd.argv
    cli = _cli_argv(argv)
    if cli is not None:
        try:
            _parse_cli(cli)
        except SystemExit as exc:
            raise AssertionError(f"{cmd.source}: {' '.join(argv)!r} does not parse (exit {exc.code})") from None
        return "cli"
    if argv[0] in ("python", "python3") and len(argv) > 2 and argv[1] == "-m" and argv[2].startswith("benchmarks."):
        script = ROOT / "benchmarks" / f"{argv[2].split('.', 1)[1]}.py"
        assert script.is_file(), f"{cmd.source}: no benchmark {argv[2]}"
        _check_script_options(script, argv[3:])
        return "benchmark"
    if argv[0] in ("python", "python3") and len(argv) > 1 and argv[1].startswith("scripts/"):
        script = ROOT / argv[1]
        assert script.is_file(), f"{cmd.source}: no script {argv[1]}"
        if script.suffix == ".py":
            _check_script_options(script, argv[2:])
        return "script"
    if argv[0] == "make":
        targets = re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), re.M)
        for target in (a for a in argv[1:] if "=" not in a and not a.startswith("-")):
            assert target in targets, f"{cmd.source}: no make target {target}"
        return "make"
    return "other"


def test_docs_have_commands_of_each_kind():
    kinds = {_check_command(c) for c in ALL_COMMANDS}
    assert {"cli", "benchmark", "make"} <= kinds
    assert any(c.run for c in ALL_COMMANDS), f"no block is marked {RUN_MARK!r}"


@pytest.mark.parametrize("cmd", ALL_COMMANDS, ids=lambda c: f"{c.source}:{c.argv[0]}")
def test_documented_command_parses(cmd):
    _check_command(cmd)


def test_a_wrong_option_is_caught():
    with pytest.raises(AssertionError, match="does not parse"):
        _check_command(DocCommand("x:1", ("yolact-lite", "predict", "--input", "a.jpg", "--no-such-flag"), False))
    with pytest.raises(AssertionError, match="has no option --no-such-flag"):
        _check_command(DocCommand("x:1", ("python", "-m", "benchmarks.nms_speed", "--no-such-flag"), False))
    with pytest.raises(AssertionError, match="no make target"):
        _check_command(DocCommand("x:1", ("make", "no-such-target"), False))


RUNNABLE = [c for c in ALL_COMMANDS if c.run]


@pytest.mark.parametrize("cmd", RUNNABLE, ids=lambda c: f"{c.source}:{' '.join(c.argv[:3])}")
def test_runnable_command_exits_zero(cmd, tmp_path):
    cli = _cli_argv(cmd.argv)
    argv = [sys.executable, "-m", "yolact_lite", *cli] if cli is not None else list(cmd.argv)
    # outputs go to a scratch copy of runs/ so the checkout stays clean
    argv = [a.replace("runs/", f"{tmp_path}/runs/") for a in argv]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, f"{cmd.source}: {' '.join(cmd.argv)}\n{proc.stderr[-2000:]}"


@pytest.mark.parametrize("where, code", PYTHON_BLOCKS, ids=[w for w, _ in PYTHON_BLOCKS])
def test_runnable_python_block(where, code):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, f"{where}\n{proc.stderr[-2000:]}"
    assert proc.stdout.strip(), f"{where}: printed nothing"


def test_readme_python_example_is_run():
    assert any(w.startswith("README.md") for w, _ in PYTHON_BLOCKS)
