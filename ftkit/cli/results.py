"""``ftkit evaluate`` (accuracy and macro-F1, official predictions), ``ftkit score`` (a predictions file against the
official ground truth), ``ftkit generate`` (try a model) and ``ftkit plot`` (metric curves)."""

from __future__ import annotations

from ftkit.results.evaluation import evaluate, score_against_truth
from ftkit.results.generation import generate


def _evaluate(args) -> int:
    result = evaluate(
        args.model,
        args.data,
        args.out,
        args.method,
        args.limit,
        args.batch_size,
        labels=args.labels.split(",") if args.labels else None,
        device=args.device,
        jobs_dir=args.jobs_dir,
        progress=not args.quiet,
        prompt_column=args.prompt_column,
        label_column=args.label_column,
        answer_column=args.answer_column,
        marker=args.marker,
        max_new_tokens=args.max_new_tokens,
    )
    print(result)
    return 0


def _score(args) -> int:
    print(score_against_truth(args.predictions, args.truth))
    return 0


def _generate(args) -> int:
    answers = generate(args.model, args.prompts, args.max_new_tokens, args.device, jobs_dir=args.jobs_dir)
    for prompt, answer in zip(args.prompts, answers, strict=True):
        if len(args.prompts) > 1:
            print(f"> {prompt}")
        print(answer)
    return 0


def _plot(args) -> int:
    from ftkit.results.plots import plot_metrics  # heavy: matplotlib loads here

    plot_metrics(args.jobs, out=args.out, jobs_dir=args.jobs_dir)
    print(f"wrote {args.out}")
    return 0


def add_evaluation(sub) -> None:
    ref = "job id or folder, exported .tar.gz, or model (catalog name, 'bundled', HF repo id, local folder)"
    e = sub.add_parser(
        "evaluate",
        help="accuracy, macro-F1 and AUC of a job or model on a labelled CSV (official-format predictions), "
        "or answer loss and exact match on free-text answers",
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
        help="predictions {pmid: decision} (default: predictions.json; metrics go beside it as .metrics.json)",
    )
    e.add_argument(
        "--method",
        choices=["score", "generate", "reason"],
        default="score",
        help="score: one forward pass, label-token argmax (default); generate: parse a greedy answer; reason: "
        "generate up to --marker, then score the labels after it (models trained on reason-style answers)",
    )
    e.add_argument("--marker", default=None, help="for --method reason: the text the label follows (default Answer:)")
    e.add_argument(
        "--max-new-tokens", type=int, default=None, help="generation budget (default 8; 128 for --method reason)"
    )
    e.add_argument(
        "--labels",
        default=None,
        help="comma-separated label words (default yes,no,maybe; a file whose rows have no label at all is then "
        "evaluated as free text: answer-token loss and exact match)",
    )
    e.add_argument("--prompt-column", default="prompt", help="column with the prompts (default prompt)")
    e.add_argument(
        "--label-column", default=None, help="column with the gold labels (default final_decision when present)"
    )
    e.add_argument(
        "--answer-column",
        default="answer",
        help="column with reference answers; a label is read from its first word where the label column is empty",
    )
    e.add_argument("--limit", type=int, default=None, help="only the first N rows")
    e.add_argument(
        "--batch-size",
        type=int,
        default=8,
        help="rows per forward pass (default 8; --method reason decodes more together where a 1 GiB KV cache allows)",
    )
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


def add_plot(sub) -> None:
    p = sub.add_parser("plot", help="plot metric curves of one job or several overlaid, as a PNG")
    p.add_argument("jobs", nargs="+", metavar="JOB", help="job ids, job folders or metrics.jsonl files")
    p.add_argument("--out", required=True, help="PNG file to write")
    p.add_argument("--jobs-dir", default=None)
    p.set_defaults(func=_plot)
