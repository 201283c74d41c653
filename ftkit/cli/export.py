"""``ftkit export`` (a completed job as one .tar.gz) and ``ftkit push`` (to a Hugging Face Hub repo)."""

from __future__ import annotations

from ftkit.errors import UsageError
from ftkit.export.gguf import GGUF_QUANTS
from ftkit.export.hub import TOKEN_HOWTO, push_to_hub
from ftkit.export.merge import EXPORT_DTYPES
from ftkit.export.stage import FORMATS, export_job

DTYPE_HELP = (
    "precision of a merged or full model: fp32, fp16 or bf16 (default: the base model's half precision, "
    "Float16 for the service's models; fp32 only when asked)"
)


def _export(args) -> int:
    if args.quant is not None and args.format != "gguf":
        raise UsageError(f"--quant {args.quant} applies to --format gguf only")
    out = export_job(
        args.job,
        out=args.out,
        merged=args.merged,
        evaluation=args.evaluation,
        jobs_dir=args.jobs_dir,
        dtype=args.dtype,
        format=args.format,
        quant=args.quant,
    )
    print(f"wrote {out}")
    return 0


def _push(args) -> int:
    if args.token is not None:
        raise UsageError(f"--token is not accepted. {TOKEN_HOWTO}")
    url = push_to_hub(
        args.job,
        repo_id=args.repo_id,
        token_env=args.token_env,
        private=not args.public,
        merged=args.merged,
        evaluation=args.evaluation,
        jobs_dir=args.jobs_dir,
        dtype=args.dtype,
    )
    print(f"pushed to {url}")
    return 0


def add_parsers(sub) -> None:
    e = sub.add_parser(
        "export",
        help="pack a completed job (adapter or merged model, tokenizer, job, metrics, model card) into one .tar.gz",
    )
    e.add_argument("job", help="job id or job folder")
    e.add_argument("--out", default=None, help="archive to write (default: <job id>[-merged|-gguf-<quant>].tar.gz)")
    e.add_argument(
        "--merged",
        action="store_true",
        help="merge the LoRA adapter into a full-precision copy of the base model",
    )
    e.add_argument(
        "--format",
        choices=FORMATS,
        default="safetensors",
        help="safetensors (adapter, or merged with --merged) or gguf (the merged model as one GGUF file with an "
        "Ollama Modelfile, checked by loading it back)",
    )
    e.add_argument("--quant", choices=GGUF_QUANTS, default=None, help="GGUF weight type (default f16)")
    e.add_argument("--dtype", choices=EXPORT_DTYPES, default=None, help=DTYPE_HELP)
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
    h.add_argument(
        "--token",
        default=None,
        metavar="TOKEN",
        help="refused: a token on the command line is visible to other users (ps, shell history); use HF_TOKEN",
    )
    h.add_argument("--merged", action="store_true", help="push the merged model instead of the adapter")
    h.add_argument("--dtype", choices=EXPORT_DTYPES, default=None, help=DTYPE_HELP)
    h.add_argument("--public", action="store_true", help="create the repo public (default: private)")
    h.add_argument("--evaluation", default=None, help="evaluation results to include (JSON file or folder)")
    h.add_argument("--jobs-dir", default=None)
    h.set_defaults(func=_push)
