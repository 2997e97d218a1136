"""What every hwbed command line shares: one-line errors, ``--debug``, quiet known warnings.

Wrap a CLI's ``main(argv) -> int`` with :func:`command` (or call :func:`run`)::

    @command
    def main(argv: list[str] | None = None) -> int: ...

    if __name__ == "__main__":
        sys.exit(main())

Then a bad input ends the program with one stderr line ``error: <what> (<culprit>)`` and exit
status 2; Ctrl-C with ``error: interrupted`` and 130; anything else is a bug in hwbed and
ends with ``error: internal error: ...`` and 1. ``--debug`` (anywhere before ``--``) prints
the traceback before that line, hwbed's debug log, and the warnings hwbed hides otherwise.

Bad inputs are hwbed's own error classes — every exception class defined in an hwbed module
(SpecError, CheckpointError, GraphError, FoldingError, BuildError, GridError, PlanError,
StoreError, EngineError, AttackError, ReportError, :class:`InputError`, ...) — and the errors
of the environment: OSError (a missing file or folder, a permission), a file that is not valid
JSON or not text, and a missing optional extra (``pip install 'hwbed[export]'``).

Library code never prints: what a long run reports as it goes (build steps, epochs, the
build's summary) goes to the :data:`PROGRESS` logger, whose records :func:`run` prints on
stdout as they are (:func:`show_progress`); hwbed's notes and warnings go to stderr.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import logging
import os
import re
import sys
import traceback
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path, PurePath
from typing import TextIO

USAGE_ERROR = 2
"""Exit status of a bad input (argparse's too)."""
INTERNAL_ERROR = 1
"""Exit status of a bug."""
INTERRUPTED = 130
"""Exit status after Ctrl-C (128 + SIGINT)."""

HARMLESS_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # Brevitas warns whenever a layer is given a shared quantizer (hwbed's blocks share the
    # stream's QuantIdentity quantizer so that adds and pools see one scale): harmless
    ("Keyword arguments are being passed but they not being used", UserWarning, "brevitas"),
    # an optional accelerated kernel for Hadamard rotations, which hwbed never uses
    ("fast_hadamard_transform package not found", UserWarning, "brevitas"),
    # brevitas' own modules importing its deprecated fx package
    ("brevitas.fx is deprecated", DeprecationWarning, "brevitas"),
)
"""(message start, category, issuing module) of third-party warnings known to be harmless."""

EXTRAS = {
    "sklearn": "data",
    "PIL": "data",
    "qonnx": "export",
    "onnx": "export",
    "onnxruntime": "export",
    "onnxoptimizer": "export",
    "onnxscript": "export",
    "pandas": "report",
    "matplotlib": "report",
    "scipy": "report",
    "dask": "sweep",
    "distributed": "sweep",
    "foolbox": "samples",
}
"""Top-level module -> the extra of pyproject.toml that installs it."""

PROGRESS = "hwbed.progress"
"""The logger of what a long run reports as it goes, at INFO: one line per record."""

_HWBED_PACKAGES = ("hwbed", "hwbed.models", "hwbed.fpga", "hwbed.sim", "hwbed.attacks")
_debug = False
log = logging.getLogger("hwbed")


class InputError(ValueError):
    """A bad command-line value, file or folder: ``InputError(what, culprit)``."""

    def __init__(self, what: str, culprit: object = None):
        super().__init__(what if culprit is None else f"{what} ({culprit})")
        self.what, self.culprit = what, culprit


def add_debug(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Show ``--debug`` in ``parser``'s help (:func:`run` acts on it before parsing)."""
    parser.add_argument(
        "--debug", action="store_true", help="on errors, print the traceback; show all warnings"
    )
    return parser


def quiet_known_warnings() -> None:
    """Ignore :data:`HARMLESS_WARNINGS` from now on (idempotent; other warnings unchanged).

    A no-op inside a ``--debug`` run, which shows every warning.
    """
    if _debug:
        return
    present = {
        (f[1].pattern, f[2], f[3].pattern)
        for f in warnings.filters
        if f[0] == "ignore" and f[1] is not None and f[3] is not None
    }
    for message, category, module in HARMLESS_WARNINGS:
        if (re.escape(message), category, module) not in present:
            warnings.filterwarnings("ignore", re.escape(message), category, module)


def run(main: Callable[[list[str] | None], int | None], argv: list[str] | None = None) -> int:
    """Run ``main(argv)`` as a command line; return its exit status instead of raising.

    ``argv`` defaults to ``sys.argv[1:]``; ``--debug`` is taken out of it before ``main``
    sees it. Warning filters, the warning hook and logging are restored afterwards.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    cut = argv.index("--") if "--" in argv else len(argv)
    debug = "--debug" in argv[:cut] or os.environ.get("HWBED_DEBUG", "") not in ("", "0")
    argv = [a for a in argv[:cut] if a != "--debug"] + argv[cut:]
    global _debug
    level, was_debug = log.level, _debug
    handler = _log_handler(debug)
    with warnings.catch_warnings():
        _debug = debug or was_debug
        quiet_known_warnings()
        warnings.showwarning = _log_warning
        try:
            with show_progress():
                code = main(argv)
            return 0 if code is None else int(code)
        except SystemExit as err:  # argparse and sys.exit() inside main
            if err.code is None or isinstance(err.code, int):
                return err.code or 0
            print(err.code, file=sys.stderr)
            return INTERNAL_ERROR
        except BrokenPipeError:  # stdout piped into head & co.: not an error
            _silence_stdout()
            return 141
        except (Exception, KeyboardInterrupt) as err:
            line, code = describe(err)
            if debug:
                traceback.print_exception(err)
            elif code == INTERNAL_ERROR:
                line += " (run with --debug for the traceback)"
            print(f"error: {line}", file=sys.stderr, flush=True)
            return code
        finally:
            _debug = was_debug
            log.setLevel(level)
            if handler is not None:
                logging.getLogger().removeHandler(handler)


@contextlib.contextmanager
def show_progress(stream: TextIO | None = None) -> Iterator[None]:
    """Print :data:`PROGRESS` records on ``stream`` (default: stdout at the time) while the
    block runs, one line each; a no-op when something shows them already."""
    logger = logging.getLogger(PROGRESS)
    if logger.handlers:
        yield
        return
    handler, level, propagate = _Lines(stream), logger.level, logger.propagate
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False  # not again as -v's ``info:`` notes or on --debug's stderr
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        logger.propagate = propagate


class _Lines(logging.Handler):
    """Each record's message as one line on ``stream``, or on ``sys.stdout`` as it is then.

    A write error (stdout piped into ``head``) propagates, as it would from ``print``.
    """

    def __init__(self, stream: TextIO | None = None):
        super().__init__()
        self.stream = stream

    def emit(self, record: logging.LogRecord) -> None:
        stream = self.stream or sys.stdout
        stream.write(record.getMessage() + "\n")
        stream.flush()


def command(main: Callable[[list[str] | None], int | None]) -> Callable[..., int]:
    """Decorator: ``main(argv)`` behaves as :func:`run` ``(main, argv)``; the original is
    ``main.__wrapped__``."""

    @functools.wraps(main)
    def wrapped(argv: list[str] | None = None) -> int:
        return run(main, argv)

    return wrapped


def describe(err: BaseException) -> tuple[str, int]:
    """The ``error:`` line (without the prefix) and the exit status for ``err``."""
    if isinstance(err, KeyboardInterrupt):
        return "interrupted (Ctrl-C)", INTERRUPTED
    if _is_hwbed_error(err):
        return _one_line(str(err)) or type(err).__name__, USAGE_ERROR
    if isinstance(err, ModuleNotFoundError) and err.name:
        top = err.name.split(".")[0]
        if top in EXTRAS:
            extra = EXTRAS[top]
            return (
                f"the optional dependency {top} is not installed (pip install 'hwbed[{extra}]')",
                USAGE_ERROR,
            )
        if top != "hwbed":
            return f"the Python module {top} is not installed (import {err.name})", USAGE_ERROR
    if isinstance(err, OSError):
        what = err.strerror[:1].lower() + err.strerror[1:] if err.strerror else _one_line(str(err))
        what = what or type(err).__name__
        culprit = err.filename if err.filename is not None else err.filename2
        return (what if culprit is None else f"{what} ({os.fsdecode(culprit)})"), USAGE_ERROR
    if isinstance(err, json.JSONDecodeError):
        what = f"not valid JSON: {err.msg.lower()} at line {err.lineno} column {err.colno}"
        return _with_file(what, err), USAGE_ERROR
    if isinstance(err, UnicodeDecodeError):
        what = f"not a text file: byte {err.object[err.start]:#04x} at offset {err.start}"
        return _with_file(what, err), USAGE_ERROR
    text = _one_line(str(err))
    return f"internal error: {type(err).__name__}" + (f": {text}" if text else ""), INTERNAL_ERROR


def _is_hwbed_error(err: BaseException) -> bool:
    return any(
        c.__module__ == "hwbed" or c.__module__.startswith("hwbed.")
        for c in type(err).__mro__
        if issubclass(c, Exception) and c is not Exception
    )


def _one_line(text: str) -> str:
    return "; ".join(part.strip() for part in text.strip().splitlines() if part.strip())


def _with_file(what: str, err: ValueError) -> str:
    """``what (file)``: the file whose content failed to decode, found among the paths the
    failing frames hold (or their ``.json`` siblings); just ``what`` when none matches."""
    content = err.doc if isinstance(err, json.JSONDecodeError) else err.object
    tb, frames = err.__traceback__, []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for frame in reversed(frames):
        for value in list(frame.f_locals.values()):
            if not isinstance(value, PurePath | str) or len(str(value)) > 4096:
                continue
            path = Path(value)
            for candidate in (path, path.with_suffix(".json")) if path.suffix else ():
                if _holds(candidate, content):
                    return f"{what} ({candidate})"
    return what


def _holds(path: Path, content: str | bytes) -> bool:
    try:
        if not path.is_file() or path.stat().st_size > 64 << 20:
            return False
        data = path.read_bytes()
        if isinstance(content, bytes):
            return data == content
        return content in (data.decode(), data.decode().replace("\r\n", "\n").replace("\r", "\n"))
    except (OSError, ValueError):
        return False


def _hwbed_roots() -> tuple[str, ...]:
    roots = []
    for name in _HWBED_PACKAGES:
        module = sys.modules.get(name)
        roots += [os.path.join(p, "") for p in getattr(module, "__path__", [])]
    return tuple(roots)


def _log_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """warnings.showwarning: hwbed's own warnings as one ``warning:`` log line each."""
    if str(filename).startswith(_hwbed_roots()):
        log.warning("%s", _one_line(str(message)))
    else:
        where = f"{os.path.basename(str(filename))}:{lineno}"
        name = category.__name__
        logging.getLogger("py.warnings").warning(
            "%s: %s (%s)", name, _one_line(str(message)), where
        )


class _Formatter(logging.Formatter):
    """``warning: message`` (``log.exception``'s traceback below it)."""

    def format(self, record: logging.LogRecord) -> str:
        text = f"{record.levelname.lower()}: {record.getMessage()}"
        return f"{text}\n{self.formatException(record.exc_info)}" if record.exc_info else text


def _log_handler(debug: bool) -> logging.Handler | None:
    """A stderr handler on the root logger unless the caller configured logging already."""
    root = logging.getLogger()
    if debug:
        log.setLevel(logging.DEBUG)
    if root.handlers:
        return None
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_Formatter())
    handler.setLevel(logging.DEBUG if debug else logging.WARNING)
    root.addHandler(handler)
    return handler


def _silence_stdout() -> None:
    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    except (OSError, ValueError):
        pass
