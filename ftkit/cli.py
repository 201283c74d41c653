"""The ``ftkit`` command. Each verb parses its arguments here and imports its module only when it runs."""

from __future__ import annotations

import argparse
import sys


def _demo(args) -> int:
    from .notebooks import run_suite

    run = run_suite(args.out)
    print(run)
    return 0


def _notebooks_run(args) -> int:
    from .notebooks import parse_parameters, run_suite

    run = run_suite(
        args.out, parse_parameters(args.p), only=args.only, data_dir=args.data_dir, progress=not args.quiet
    )
    print(run)
    return 0


def _notebooks_sweep(args) -> int:
    from .notebooks import sweep

    table = sweep(args.grid, out=args.out)
    print(table.to_string(index=False))
    return 0 if (table["status"] == "ok").all() else 1


def _add_notebooks(sub) -> None:
    nb = sub.add_parser("notebooks", help="run the cookbook notebooks with papermill (suite or sweep)")
    nbsub = nb.add_subparsers(dest="nb_verb", required=True, metavar="ACTION")
    r = nbsub.add_parser("run", help="execute the five notebooks in order into a run folder")
    r.add_argument("--out", default="out/cookbook", help="run folder (default: out/cookbook)")
    r.add_argument(
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="notebook parameter (repeatable); values read as YAML scalars",
    )
    r.add_argument("--only", default=None, help="comma-separated notebooks to run, e.g. 02,03")
    r.add_argument("--data-dir", default=None, help="use an already prepared PubMedQA folder")
    r.add_argument("--quiet", action="store_true")
    r.set_defaults(func=_notebooks_run)
    s = nbsub.add_parser("sweep", help="run configure/train/evaluate once per combination of GRID.yaml")
    s.add_argument("grid", help="YAML with 'grid' (parameter -> values) and optional fixed 'parameters'")
    s.add_argument("--out", default=None, help="sweep folder (default: next to GRID.yaml, named after it)")
    s.set_defaults(func=_notebooks_sweep)


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
    t.add_argument(
        "--jobs-dir", default=None, help="where job folders live (default: local.output_dir, runs/)"
    )
    t.add_argument(
        "--fresh", action="store_true", help="discard an existing job of the same name and start over"
    )
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


def _prepare_pubmedqa(args) -> int:
    from .pubmedqa import ChecksumMismatch, DatasetUnavailable, prepare_pubmedqa

    out = args.out or ("data/pubmedqa" if args.subset == "labeled" else f"data/pubmedqa-{args.subset}")
    extra = {"max_test": args.max_test, "url": args.url} if args.subset == "labeled" else {}
    try:
        ds = prepare_pubmedqa(
            out,
            source=args.source,
            seed=args.seed,
            n_validation=args.validation,
            answer_style=args.answer_style,
            max_train=args.max_train,
            max_validation=args.max_validation,
            subset=args.subset,
            **extra,
        )
    except (DatasetUnavailable, ChecksumMismatch, OSError, ValueError) as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 1
    print(f"PubMedQA ({args.subset}) written to {ds.out} (rows per split and label):")
    print(ds.summary())
    return 0


def _validate(args) -> int:
    import json

    from .datacheck import check_dataset

    try:
        report = check_dataset(
            args.train,
            args.validation,
            prompt_column=None if args.no_prompt else args.prompt_column,
            answer_column=args.answer_column,
            tokenizer=args.model,
            context_length=args.context_length,
        )
    except (ValueError, RuntimeError, OSError) as e:  # the model or its tokenizer cannot be loaded
        print(f"ftkit: {e}", file=sys.stderr)
        return 2
    limit = None if args.all else 20
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format(limit=limit))
    return 0 if report.ok else 1


def _add_data(sub) -> None:
    p = sub.add_parser("prepare", help="write a ready-made dataset as prompt/answer CSVs")
    ds = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    q = ds.add_parser("pubmedqa", help="PubMedQA: PQA-L official split (default), or PQA-A / PQA-U")
    q.add_argument("--out", default=None, help="output folder (default: data/pubmedqa[-SUBSET])")
    q.add_argument("--subset", choices=["labeled", "artificial", "unlabeled"], default="labeled")
    q.add_argument("--source", default=None, help="local ori_pqal.json, or parquet file/folder")
    q.add_argument("--seed", type=int, default=42, help="seed of the train/validation split (default 42)")
    q.add_argument("--validation", type=int, default=50, help="validation rows, stratified (default 50)")
    styles = ["decision", "decision_long", "long"]
    q.add_argument("--answer-style", choices=styles, help="'yes', 'yes. <long answer>' (default) or long")
    q.add_argument("--max-train", type=int, default=None, help="stratified subsample of the training rows")
    q.add_argument("--max-validation", type=int, default=None, help="stratified subsample of validation")
    q.add_argument("--max-test", type=int, default=None, help="stratified subsample of the test rows")
    q.add_argument("--url", default=None, help="base URL of the official data folder (or FTKIT_PUBMEDQA_URL)")
    q.set_defaults(func=_prepare_pubmedqa)

    v = sub.add_parser("validate", help="check prompt/answer CSV files and list every problem")
    v.add_argument("train", help="training CSV")
    v.add_argument("--validation", default=None, help="validation CSV (default: 1%% of training is held out)")
    v.add_argument("--prompt-column", default="prompt", help="prompt column (default: prompt)")
    v.add_argument("--no-prompt", action="store_true", help="answer-only data: no prompt column")
    v.add_argument("--answer-column", default="answer", help="answer column (default: answer)")
    v.add_argument("--model", default=None, help="model: check its chat template and context")
    v.add_argument("--context-length", type=int, default=None, help="override the model's context length")
    v.add_argument("--all", action="store_true", help="list every problem (default: 20 per check and file)")
    v.add_argument("--json", action="store_true", help="the report as JSON")
    v.set_defaults(func=_validate)


def _models(args) -> int:
    from .catalog import models_command

    return models_command(as_json=args.json)


def _check_job(args) -> int:
    from .spec import check_job_command

    return check_job_command(args.job, check_files=not args.no_files)


def _add_spec(sub) -> None:
    m = sub.add_parser("models", help="list the base models (catalog, bundled) a job can name")
    m.add_argument("--json", action="store_true", help="JSON instead of a table")
    m.set_defaults(func=_models)

    c = sub.add_parser("check-job", help="validate a job file: print its normalised body or its problems")
    c.add_argument("job", help="job file (.json/.yaml/.yml): service body or the demo client's YAML layout")
    c.add_argument("--no-files", action="store_true", help="check the body only, not its data files")
    c.set_defaults(func=_check_job)


def _evaluate(args) -> int:
    from .evaluate import evaluate_command

    return evaluate_command(args)


def _score(args) -> int:
    from .evaluate import score_command

    return score_command(args)


def _generate(args) -> int:
    from .generate import generate_command

    return generate_command(args)


def _add_evaluation(sub) -> None:
    ref = "job id or folder, exported .tar.gz, or model (catalog name, 'bundled', HF repo id, local folder)"
    e = sub.add_parser(
        "evaluate",
        help="yes/no/maybe accuracy and macro-F1 of a job or model on a CSV; "
        "writes official-format predictions",
    )
    e.add_argument("model", metavar="JOB|EXPORT|MODEL", help=ref)
    e.add_argument(
        "--data",
        default="data/pubmedqa/test.csv",
        help="CSV with prompt and final_decision/answer (default: data/pubmedqa/test.csv)",
    )
    e.add_argument(
        "--out",
        default="predictions.json",
        help="predictions {pmid: decision} (default: "
        "predictions.json; metrics go beside it as .metrics.json)",
    )
    e.add_argument(
        "--method",
        choices=["score", "generate"],
        default="score",
        help="score: one forward pass, label-token argmax (default); generate: parse a greedy answer",
    )
    e.add_argument("--limit", type=int, default=None, help="only the first N rows")
    e.add_argument("--batch-size", type=int, default=8, help="rows per forward pass (default 8)")
    e.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    e.add_argument("--jobs-dir", default=None, help="where job ids are looked up (default runs/)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=_evaluate)

    s = sub.add_parser("score", help="score an official predictions file against test_ground_truth.json")
    s.add_argument("predictions", help="JSON {pmid: yes|no|maybe} for all 500 test PMIDs")
    s.add_argument("--truth", default=None, help="test_ground_truth.json (default: the official file)")
    s.set_defaults(func=_score)

    g = sub.add_parser("generate", help="greedy answers of a job or model to prompts (chat template applied)")
    g.add_argument("model", metavar="JOB|EXPORT|MODEL", help=ref)
    g.add_argument("prompts", nargs="+", metavar="PROMPT")
    g.add_argument("--max-new-tokens", type=int, default=64, help="default 64")
    g.add_argument("--device", default="auto", help="auto (default), cuda, mps or cpu")
    g.add_argument("--jobs-dir", default=None)
    g.set_defaults(func=_generate)


def _plot(args) -> int:
    from .jobs import JobError
    from .plots import plot_metrics

    try:
        plot_metrics(args.jobs, out=args.out, jobs_dir=args.jobs_dir)
    except (JobError, ValueError, OSError) as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 1
    print(f"wrote {args.out}")
    return 0


def _export(args) -> int:
    from .export import ExportError, export_job
    from .jobs import JobError

    try:
        out = export_job(
            args.job, out=args.out, merged=args.merged, evaluation=args.evaluation, jobs_dir=args.jobs_dir
        )
    except (ExportError, JobError, ValueError, OSError) as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 1
    print(f"wrote {out}")
    return 0


def _push(args) -> int:
    from .export import ExportError
    from .hub import HubError, push_to_hub
    from .jobs import JobError

    try:
        url = push_to_hub(
            args.job,
            repo_id=args.repo_id,
            token_env=args.token_env,
            private=not args.public,
            merged=args.merged,
            evaluation=args.evaluation,
            jobs_dir=args.jobs_dir,
        )
    except (HubError, ExportError, JobError, ValueError, OSError) as e:
        print(f"ftkit: {e}", file=sys.stderr)
        return 1
    print(f"pushed to {url}")
    return 0


def _add_export(sub) -> None:
    p = sub.add_parser("plot", help="plot metric curves of one job or several overlaid, as a PNG")
    p.add_argument("jobs", nargs="+", metavar="JOB", help="job ids, job folders or metrics.jsonl files")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--jobs-dir", default=None)
    p.set_defaults(func=_plot)

    e = sub.add_parser(
        "export",
        help="pack a completed job (adapter or merged model, tokenizer, job, "
        "metrics, model card) into one .tar.gz",
    )
    e.add_argument("job", help="job id or job folder")
    e.add_argument("--out", default=None, help="archive to write (default: <job id>[-merged].tar.gz)")
    e.add_argument(
        "--merged",
        action="store_true",
        help="merge the LoRA adapter into a full-precision copy of the base model",
    )
    e.add_argument("--evaluation", default=None, help="evaluation results to include (JSON file or folder)")
    e.add_argument("--jobs-dir", default=None)
    e.set_defaults(func=_export)

    h = sub.add_parser("push", help="upload a job's export (or an export archive) to a Hugging Face Hub repo")
    h.add_argument("job", help="job id, job folder or .tar.gz archive from `ftkit export`")
    h.add_argument("--repo-id", default=None, help="the model repo, user/name (created if missing)")
    h.add_argument(
        "--token-env",
        default=None,
        help="environment variable holding the token (default: HF_TOKEN or `hf auth login`)",
    )
    h.add_argument("--merged", action="store_true", help="push the merged model instead of the adapter")
    h.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    h.add_argument("--evaluation", default=None, help="evaluation results to include (JSON file or folder)")
    h.add_argument("--jobs-dir", default=None)
    h.set_defaults(func=_push)


def _estimate(args) -> int:
    from .estimate import estimate_command

    return estimate_command(args.job, measure=not args.no_measure, steps=args.steps, as_json=args.json)


def _add_estimate(sub) -> None:
    e = sub.add_parser("estimate", help="a job's tokens, steps, memory and time here, before it runs")
    e.add_argument("job", help="job file (.json/.yaml)")
    e.add_argument("--no-measure", action="store_true", help="do not load the model to time training steps")
    e.add_argument("--steps", type=int, default=3, help="optimizer steps timed after one warm-up (default 3)")
    e.add_argument("--json", action="store_true", help="the estimate as JSON")
    e.set_defaults(func=_estimate)


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="ftkit", description="Fine-tune language models locally (GPU or CPU).")
    p.add_argument("--version", action="version", version=f"ftkit {__version__}")
    sub = p.add_subparsers(dest="verb", required=True, metavar="VERB")

    d = sub.add_parser("demo", help="run the whole PubMedQA cookbook (five notebooks) on the bundled model")
    d.add_argument("--out", default="out/demo", help="folder for the demo's results (default: out/demo)")
    d.set_defaults(func=_demo)
    _add_notebooks(sub)

    _add_training(sub)
    _add_spec(sub)
    _add_data(sub)
    _add_evaluation(sub)
    _add_estimate(sub)
    _add_export(sub)

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
