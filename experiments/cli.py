"""What every command line shares: a user's mistake is one ``error:`` line and exit status 2.

A mistake in flags, presets, environment ids, log directories or config values raises
:class:`UsageError` (or a ``ValueError`` from a config check, turned into one by
:func:`user_input`); :func:`run` prints ``error: <message>`` on stderr and exits 2. Anything
else (a failure inside jax, a bug) keeps its traceback. ``--debug`` on any command line, or
``MBRL_DEBUG=1`` in the environment, shows the traceback of a usage error too.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import sys
import traceback
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

DEBUG_FLAG = "--debug"
DEBUG_ENV = "MBRL_DEBUG"
EXIT_USAGE = 2
# Exceptions raised inside these packages are failures of the computation, not of the input.
_INTERNAL_PACKAGES = ("jax", "jaxlib", "flax", "optax", "orbax", "mctx", "flashbax", "chex")


class UsageError(Exception):
    """A mistake in the command line, a preset, an id, a log directory or a config value."""


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are :class:`UsageError` (one line, no usage)."""

    def error(self, message: str):
        raise UsageError(f"{message} (see {self.prog} --help)")


def add_run_flag(p: argparse.ArgumentParser, what: str) -> None:
    """The repeatable ``--run NAME=LOGDIR`` of the commands that read runs already made."""
    p.add_argument("--run", action="append", required=True, metavar="NAME=LOGDIR",
                   help=f"a run to {what} (repeatable)")


def named_runs(items: Sequence[str]) -> Dict[str, str]:
    """``--run NAME=LOGDIR`` values as ``{NAME: LOGDIR}``, in order; a :class:`UsageError` for
    an item without both parts or a name given twice."""
    runs: Dict[str, str] = {}
    for item in items:
        name, sep, logdir = item.partition("=")
        if not sep or not name or not logdir:
            raise UsageError(f"--run takes NAME=LOGDIR, got {item!r}")
        if name in runs:
            raise UsageError(f"--run names {name!r} twice; give each run its own name")
        runs[name] = logdir
    return runs


def check_output_file(path: Optional[str], flag: str) -> None:
    """Makes ``path``'s folder (None: not given) if it is missing, as ``experiments.train``
    makes its ``--logdir``; a :class:`UsageError` naming ``flag`` where ``path`` cannot be
    written as a file: the path is a folder, or its folder cannot be made or is not writable.
    Checked before the work, so that a run does not end in a traceback after it."""
    if not path:
        return
    if os.path.isdir(path):
        raise UsageError(f"{flag} {path} is a directory; give a file name")
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise UsageError(f"{flag} {path}: cannot make directory {folder} "
                         f"({err.strerror or err}); pick another path") from None
    if not os.access(folder, os.W_OK):
        raise UsageError(f"{flag} {path}: directory {folder} is not writable; pick another path")


def _raised_internally(err: BaseException) -> bool:
    """True when the innermost frame of ``err``'s traceback lies in a numerical library."""
    frames = traceback.extract_tb(err.__traceback__)
    if not frames:
        return False
    parts = re.split(r"[\\/]", frames[-1].filename)
    return any(p in _INTERNAL_PACKAGES for p in parts[:-1])


@contextlib.contextmanager
def user_input() -> Iterator[None]:
    """Turns the ``ValueError`` / ``KeyError`` / path errors of config checks into
    :class:`UsageError` (those raised inside jax and friends pass through unchanged)."""
    try:
        yield
    except UsageError:
        raise
    except (ValueError, KeyError, FileNotFoundError, NotADirectoryError,
            FileExistsError) as err:
        if _raised_internally(err):
            raise
        message = err.args[0] if isinstance(err, KeyError) and err.args else str(err)
        raise UsageError(str(message)) from err


def debugging(argv: Sequence[str]) -> bool:
    return DEBUG_FLAG in argv or os.environ.get(DEBUG_ENV, "") not in ("", "0")


def run(main: Callable[[Optional[List[str]]], Any], argv: Optional[Sequence[str]] = None) -> Any:
    """Calls ``main(argv)`` (``sys.argv[1:]`` by default, ``--debug`` removed); a
    :class:`UsageError` prints one ``error:`` line on stderr and exits with status 2."""
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = debugging(argv)
    argv = [a for a in argv if a != DEBUG_FLAG]
    try:
        with user_input():
            return main(argv)
    except UsageError as err:
        if debug:
            raise
        message = " ".join(str(err).split())
        print(f"error: {message}", file=sys.stderr, flush=True)
        raise SystemExit(EXIT_USAGE) from None


_BOX = re.compile(r"[│╭╮╰╯]")
_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def condense_tyro(text: str) -> str:
    """tyro's boxed error (title, message, suggestions) as one line."""
    lines = [_BOX.sub("", _ANSI.sub("", line)).strip() for line in text.splitlines()]
    message, suggestions, section = [], [], "message"
    for line in lines:
        if not line:
            continue
        if set(line) <= {"─", " "}:  # a divider ends the message
            section = "after" if section == "message" else section
            continue
        if line.startswith("─"):  # the title line: ─ Title ───
            continue
        if line.startswith("Perhaps you meant"):
            section = "suggest"
            continue
        if line.startswith("For full helptext") or line.startswith("Argument helptext"):
            section = "skip"
            continue
        if section == "message":
            message.append(line)
        elif section == "suggest" and line.startswith("--"):
            suggestions.append(line.split()[0])
    out = " ".join(message) or "invalid agent option"
    if suggestions:
        out += f" (did you mean {', '.join(dict.fromkeys(suggestions))}?)"
    return out


def tyro_call(fn: Callable[[], Any], hint: str) -> Any:
    """Runs a tyro parse; its boxed error becomes a :class:`UsageError` of one line ending in
    ``hint``. ``--help`` output is passed through."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            return fn()
    except SystemExit as exit_:
        if exit_.code in (0, None):
            sys.stderr.write(err.getvalue())
            raise
        raise UsageError(f"{condense_tyro(err.getvalue())}; {hint}") from None


__all__ = ["ArgumentParser", "UsageError", "condense_tyro", "debugging", "run", "tyro_call",
           "user_input"]
