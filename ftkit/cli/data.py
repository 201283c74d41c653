"""``ftkit prepare pubmedqa`` (a ready-made dataset as CSVs) and ``ftkit validate`` (every problem of a CSV)."""

from __future__ import annotations

import json

from ftkit.data.checks import check_dataset
from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
from ftkit.data.pubmedqa.rows import ANSWER_STYLES, CONTEXTS


def _prepare_pubmedqa(args) -> int:
    out = args.out or ("data/pubmedqa" if args.subset == "labeled" else f"data/pubmedqa-{args.subset}")
    extra = {"max_test": args.max_test, "url": args.url} if args.subset == "labeled" else {}
    ds = prepare_pubmedqa(
        out,
        source=args.source,
        seed=args.seed,
        n_validation=args.validation,
        answer_style=args.answer_style,
        max_train=args.max_train,
        max_validation=args.max_validation,
        subset=args.subset,
        context=args.context,
        **extra,
    )
    print(f"PubMedQA ({args.subset}) written to {ds.out} (rows per split and label):")
    print(ds.summary())
    if args.max_train is not None and args.max_validation is None and args.subset != "unlabeled":
        print(
            f"note: --max-train subsamples the training rows only; validation keeps its {args.validation} rows "
            "(--max-validation N subsamples it too)"
        )
    return 0


def _validate(args) -> int:
    report = check_dataset(
        args.train,
        args.validation,
        prompt_column=None if args.no_prompt else args.prompt_column,
        answer_column=args.answer_column,
        tokenizer=args.model,
        context_length=args.context_length,
    )
    limit = None if args.all else 20
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.format(limit=limit))
    return 0 if report.ok else 1


def add_parsers(sub) -> None:
    p = sub.add_parser("prepare", help="write a ready-made dataset as prompt/answer CSVs")
    ds = p.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    q = ds.add_parser("pubmedqa", help="PubMedQA: PQA-L official split (default), or PQA-A / PQA-U")
    q.add_argument("--out", default=None, help="output folder (default: data/pubmedqa[-SUBSET])")
    q.add_argument("--subset", choices=["labeled", "artificial", "unlabeled"], default="labeled")
    q.add_argument("--source", default=None, help="local ori_pqal.json, or parquet file/folder")
    q.add_argument("--seed", type=int, default=42, help="seed of the train/validation split (default 42)")
    q.add_argument("--validation", type=int, default=50, help="validation rows, stratified (default 50)")
    q.add_argument(
        "--answer-style",
        choices=ANSWER_STYLES,
        help="'yes', 'yes. <long answer>' (default), the long answer, or reason: '<long answer>\\nAnswer: yes'",
    )
    q.add_argument(
        "--context",
        choices=CONTEXTS,
        default="all",
        help="abstract sections in each prompt: all (default) or results (about half the tokens)",
    )
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
