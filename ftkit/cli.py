"""The ``ftkit`` command. Each verb parses its arguments here and imports its module only when it runs."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(out=args.out)


def _train(args) -> int:
    from .jobs import JobError
    from .train import train

    try:
        job = train(args.job, jobs_dir=args.jobs_dir, fresh=args.fresh, quiet=args.quiet)
    except JobError as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 1
    print(f"job {job.id}: {job.status} -> {job.model_dir}")
    return 0


def _jobs(args) -> int:
    from .jobs import jobs_table

    df = jobs_table(args.jobs_dir, args.status)
    print(df.to_string(index=False) if len(df) else "no jobs")
    return 0


def _show(args) -> int:
    import json

    from .jobs import JobError, get_job

    try:
        rec = get_job(args.id, args.jobs_dir).record
    except JobError as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 1
    rec.pop("fingerprint", None)
    print(json.dumps(rec, indent=2))
    return 0


def _metrics(args) -> int:
    import pandas as pd

    from .jobs import JobError, get_job

    try:
        rows = get_job(args.id, args.jobs_dir).metrics()
    except JobError as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 1
    if args.json:
        import json

        for r in rows:
            print(json.dumps(r))
    else:
        df = pd.DataFrame(rows)
        print(df.to_string(index=False) if len(df) else "no metrics yet")
    return 0


def _cancel(args) -> int:
    from .jobs import JobError, cancel

    try:
        job = cancel(args.id, args.jobs_dir)
    except JobError as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 1
    print(f"job {job.id}: cancel requested (status now {job.status})")
    return 0


def _add_training(sub) -> None:
    t = sub.add_parser("train", help="run or resume a fine-tuning job from a job file (JSON or YAML)")
    t.add_argument("job", help="job file (.json/.yaml)")
    t.add_argument("--jobs-dir", default=None, help="where job folders live (default: local.output_dir, runs/)")
    t.add_argument("--fresh", action="store_true", help="discard an existing job of the same name and start over")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    j = sub.add_parser("jobs", help="list jobs")
    j.add_argument("--status", choices=["queued", "running", "completed", "failed", "cancelled"])
    j.add_argument("--jobs-dir", default=None)
    j.set_defaults(func=_jobs)

    for verb, func, help_ in (
        ("show", _show, "show one job's record (job.json)"),
        ("metrics", _metrics, "print a job's metric records"),
        ("cancel", _cancel, "ask a running job to stop after its current step (keeps a checkpoint)"),
    ):
        v = sub.add_parser(verb, help=help_)
        v.add_argument("id", help="job id (its name, made filesystem-safe) or job folder")
        v.add_argument("--jobs-dir", default=None)
        if verb == "metrics":
            v.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        v.set_defaults(func=func)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ftkit", description="Fine-tune language models locally (GPU or CPU).")
    p.add_argument("--version", action="version", version=f"ftkit {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    d = sub.add_parser("demo", help="run the PubMedQA demo pipeline on the bundled model")
    d.add_argument("--out", default="out/demo", help="folder for the demo's results (default: out/demo)")
    d.set_defaults(func=_demo)

    _add_training(sub)

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
