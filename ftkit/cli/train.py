"""``ftkit train``, the job store's verbs (``jobs``, ``show``, ``metrics``, ``cancel``) and ``ftkit estimate``."""

from __future__ import annotations

import json
import warnings

from ftkit.job.datacheck import check_job_data
from ftkit.job.problems import JobSpecWarning
from ftkit.job.spec import load_job
from ftkit.job.store import cancel, get_job, job_for_file, jobs_table
from ftkit.train.estimate import estimate


def _train(args) -> int:
    # a bad job file or bad data is reported before torch and transformers load (seconds) and before a job folder
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JobSpecWarning)  # printed below as notes, not as Python warnings
        spec = load_job(args.job)
    for note in [] if args.quiet else spec.notes:
        print(f"ftkit: note: {note}")
    report = check_job_data(spec)
    from ftkit.train.engine import train  # heavy: torch and transformers load here

    job = train(spec, jobs_dir=args.jobs_dir, fresh=args.fresh, quiet=args.quiet, data_report=report)
    print(f"job {job.id}: {job.status} -> {job.model_dir}")
    return 0


def _jobs(args) -> int:
    root = args.jobs_dir or (job_for_file(args.job_file).path.parent if args.job_file else None)
    df = jobs_table(root, args.status)
    print(df.to_string(index=False) if len(df) else "no jobs")
    return 0


def _show(args) -> int:
    rec = get_job(args.id, args.jobs_dir).state
    rec.pop("fingerprint", None)
    print(json.dumps(rec, indent=2))
    return 0


def _metrics(args) -> int:
    import pandas as pd

    rows = get_job(args.id, args.jobs_dir).metrics()
    if args.json:
        for r in rows:
            print(json.dumps(r))
    else:
        df = pd.DataFrame(rows)
        print(df.to_string(index=False) if len(df) else "no metrics yet")
    return 0


def _cancel(args) -> int:
    job = cancel(args.id, args.jobs_dir)
    print(f"job {job.id}: cancel requested (status now {job.status})")
    return 0


def add_training(sub) -> None:
    t = sub.add_parser("train", help="run or resume a fine-tuning job from a job file (JSON or YAML)")
    t.add_argument("job", help="job file (.json/.yaml)")
    t.add_argument("--jobs-dir", default=None, help="where job folders live (default: local.output_dir, runs/)")
    t.add_argument("--fresh", action="store_true", help="discard an existing job of the same name and start over")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_train)

    j = sub.add_parser("jobs", help="list jobs")
    j.add_argument("job_file", nargs="?", help="list the jobs where this job file's jobs go (its local.output_dir)")
    j.add_argument("--status", choices=["queued", "running", "completed", "failed", "cancelled"])
    j.add_argument("--jobs-dir", default=None)
    j.set_defaults(func=_jobs)

    for verb, func, help_ in (
        ("show", _show, "show one job's record (job.json)"),
        ("metrics", _metrics, "print a job's metric records"),
        ("cancel", _cancel, "ask a running job to stop after its current step (keeps a checkpoint)"),
    ):
        v = sub.add_parser(verb, help=help_)
        v.add_argument("id", help="job id (its name, made filesystem-safe), job folder, or the job file it ran from")
        v.add_argument("--jobs-dir", default=None)
        if verb == "metrics":
            v.add_argument("--json", action="store_true", help="JSON lines instead of a table")
        v.set_defaults(func=func)


def _estimate(args) -> int:
    est = estimate(args.job, measure=not args.no_measure, steps=args.steps, processes=args.processes)
    print(json.dumps(est.to_dict(), indent=2) if args.json else est)
    return 0


def add_estimate(sub) -> None:
    e = sub.add_parser("estimate", help="a job's tokens, steps, memory and time here, before it runs")
    e.add_argument("job", help="job file (.json/.yaml)")
    e.add_argument("--no-measure", action="store_true", help="do not load the model to time training steps")
    e.add_argument("--steps", type=int, default=3, help="optimizer steps timed after one warm-up (default 3)")
    e.add_argument(
        "--processes",
        type=int,
        default=1,
        help="processes the job will run on (torchrun --nproc_per_node x nodes): local.distributed fsdp shards "
        "the memory figure over them (default 1)",
    )
    e.add_argument("--json", action="store_true", help="the estimate as JSON")
    e.set_defaults(func=_estimate)
