"""The ``ftkit`` command. Each verb parses its arguments here and imports its module only when it runs."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(out=args.out)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ftkit", description="Fine-tune language models locally (GPU or CPU).")
    p.add_argument("--version", action="version", version=f"ftkit {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    d = sub.add_parser("demo", help="run the PubMedQA demo pipeline on the bundled model")
    d.add_argument("--out", default="out/demo", help="folder for the demo's results (default: out/demo)")
    d.set_defaults(func=_demo)

    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
