"""On top of everything: the ``ftkit`` command.

Owns one module per stage's verbs (``data``, ``job``, ``train``, ``results``, ``export``, ``serve``, ``cookbook``),
each adding its subcommands to the parser, and imports every stage. This module builds the parser and holds the one
error handler: an :class:`~ftkit.errors.FtkitError` (or an OS error such as a full disk) prints ``ftkit: <message>`` and
exits 1 (2 for usage errors), never a traceback unless ``--debug`` or ``FTKIT_DEBUG=1``; an unexpected exception
(a bug) prints one line saying so. No message repeats a secret from the command line, options are never matched by
prefix (``--tok`` is not ``--token-env``), and output cut short by a closed pipe (``| head``) ends quietly.
Heavy stages (the training engine, plots, the estimate's timed steps) load only when their verb runs.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import traceback

from ftkit.cli import cookbook, data, export, job, results, serve, train
from ftkit.errors import FtkitError, UsageError, redact
from ftkit.version import __version__

# words that make an option a secret's (--token, --hf-token, --api-key); --token-env takes a variable's name
_SECRET_WORDS = {"token", "tok", "secret", "password", "passwd", "pass", "key", "apikey", "auth"}


class CommandLineError(UsageError):
    """What argparse would print and exit on; raised instead, so that main prints it the ftkit way."""

    def __init__(self, message: str, parser: argparse.ArgumentParser):
        super().__init__(message)
        self.usage = parser.format_usage()
        self.verb = parser.prog.removeprefix("ftkit").strip()


class Parser(argparse.ArgumentParser):
    """argparse without prefix matching (an unknown ``--token`` must not become ``--token-env``) and with its
    errors raised as :class:`CommandLineError`."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message):
        raise CommandLineError(message, self)


def secret_arguments(argv: list[str]) -> list[str]:
    """Values given to an option named like a secret (``--token X``, ``--token=X``): never shown in a message."""
    out = []
    for i, arg in enumerate(argv):
        name, eq, value = arg.partition("=")
        words = set(re.split(r"[-_]+", name.lstrip("-").lower()))
        if not name.startswith("-") or not words & _SECRET_WORDS or name == "--token-env":
            continue
        if eq:
            out.append(value)
        elif i + 1 < len(argv):
            out.append(argv[i + 1])
    return out


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="ftkit", description="Fine-tune language models locally (GPU or CPU).")
    p.add_argument("--version", action="version", version=f"ftkit {__version__}")
    p.add_argument("--debug", action="store_true", help="show the Python traceback of an error (or FTKIT_DEBUG=1)")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")
    cookbook.add_parsers(sub)
    train.add_training(sub)
    job.add_parsers(sub)
    data.add_parsers(sub)
    results.add_evaluation(sub)
    train.add_estimate(sub)
    results.add_plot(sub)
    export.add_parsers(sub)
    serve.add_parsers(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    secrets = secret_arguments(argv)
    try:
        args = build_parser().parse_args(argv)
    except CommandLineError as e:
        print(redact(e.usage, secrets), end="", file=sys.stderr)
        print(f"ftkit: {e.verb + ': ' if e.verb else ''}{redact(str(e), secrets)}", file=sys.stderr)
        return e.exit_code
    debug = args.debug or os.environ.get("FTKIT_DEBUG", "") not in ("", "0")
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, so that a reader that went away (| head) is handled below
        return code
    except KeyboardInterrupt:
        print("ftkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return _reader_gone()
    except (FtkitError, OSError) as e:
        if debug:
            traceback.print_exc()
        print(f"ftkit: {redact(str(e), secrets)}", file=sys.stderr)
        if getattr(e, "hint", None):
            print(f"({e.hint})", file=sys.stderr)
        return getattr(e, "exit_code", 1)
    except Exception as e:  # a bug: one line, and the traceback with --debug for the report
        if debug:
            traceback.print_exc()
        print(
            f"ftkit: internal error: {type(e).__name__}: {redact(str(e), secrets)}\n"
            "(this is a bug in ftkit: run the command again with --debug and report the traceback)",
            file=sys.stderr,
        )
        return 1


def _reader_gone() -> int:
    """The output's reader closed the pipe (``ftkit metrics JOB | head -1``): stop quietly, with the status a
    command killed by SIGPIPE has, and without Python's complaint when it flushes stdout at exit."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return 141


if __name__ == "__main__":
    sys.exit(main())
