"""``ftkit demo`` and ``ftkit notebooks run|sweep``: the cookbook notebooks under papermill."""

from __future__ import annotations

import argparse

from ftkit.cookbook.defaults import PRESETS
from ftkit.cookbook.runner import parse_parameters, run_suite, sweep


def _demo(args) -> int:
    print(run_suite(args.out))
    return 0


def _notebooks_run(args) -> int:
    params = parse_parameters(args.p, args.stray)
    preset = PRESETS.get(args.preset)
    run = run_suite(args.out, params, only=args.only, data_dir=args.data_dir, progress=not args.quiet, preset=preset)
    print(run)
    return 0


def _notebooks_sweep(args) -> int:
    table = sweep(args.grid, out=args.out)
    print(table.to_string(index=False))
    return 0 if (table["status"] == "ok").all() else 1


def add_parsers(sub) -> None:
    d = sub.add_parser("demo", help="run the whole PubMedQA cookbook (six notebooks) on the bundled model")
    d.add_argument("--out", default="out/demo", help="folder for the demo's results (default: out/demo)")
    d.set_defaults(func=_demo)

    nb = sub.add_parser("notebooks", help="run the cookbook notebooks with papermill (suite or sweep)")
    nbsub = nb.add_subparsers(dest="nb_verb", required=True, metavar="ACTION")
    r = nbsub.add_parser("run", help="execute the six notebooks in order into a run folder")
    r.add_argument("--out", default="out/cookbook", help="run folder (default: out/cookbook)")
    r.add_argument(
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="notebook parameter (repeatable); values read as YAML scalars",
    )
    r.add_argument("stray", nargs="*", help=argparse.SUPPRESS)  # `-p key value`: refused with the KEY=VALUE form
    r.add_argument("--only", default=None, help="comma-separated notebooks to run, e.g. 02,03")
    r.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default=None,
        help="a parameter set on top of the defaults (full: all training, validation and test rows, 2 epochs); "
        "-p values override it",
    )
    r.add_argument("--data-dir", default=None, help="use an already prepared PubMedQA folder")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_notebooks_run)
    s = nbsub.add_parser("sweep", help="run configure/train/evaluate once per combination of GRID.yaml")
    s.add_argument("grid", help="YAML with 'grid' (parameter -> values) and optional fixed 'parameters'")
    s.add_argument("--out", default=None, help="sweep folder (default: next to GRID.yaml, named after it)")
    s.set_defaults(func=_notebooks_sweep)
