"""On top of everything: the ``ftkit`` command.

Owns one module per stage's verbs (``data``, ``job``, ``train``, ``results``, ``export``, ``serve``, ``cookbook``),
each adding its subcommands to the parser, and imports every stage. This module builds the parser and holds the one
error handler: an :class:`~ftkit.errors.FtkitError` (or an OS error such as a full disk) prints ``ftkit: <message>`` and
exits 1 (2 for usage errors), never a traceback unless ``--debug`` or ``FTKIT_DEBUG=1``. Heavy stages (the training
engine, plots, the estimate's timed steps) load only when their verb runs.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback

from ftkit.cli import cookbook, data, export, job, results, serve, train
from ftkit.errors import FtkitError
from ftkit.version import __version__


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ftkit", description="Fine-tune language models locally (GPU or CPU).")
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
    args = build_parser().parse_args(argv)
    debug = args.debug or os.environ.get("FTKIT_DEBUG", "") not in ("", "0")
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FtkitError, OSError) as e:
        if debug:
            traceback.print_exc()
        print(f"ftkit: {e}", file=sys.stderr)
        if getattr(e, "hint", None):
            print(f"({e.hint})", file=sys.stderr)
        return getattr(e, "exit_code", 1)


if __name__ == "__main__":
    sys.exit(main())
