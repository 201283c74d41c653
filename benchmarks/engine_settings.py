"""Engine settings benchmark: padding-free vs padded batching, fp32 vs bf16, on the bundled SmolLM2-135M-Instruct.

Each configuration trains the same LoRA job on the same real PubMedQA rows in its own fresh process (runs
alternated, repeated), and reports optimizer steps/s and trained tokens/s from the job's own metrics.

    python benchmarks/engine_settings.py                      # defaults: 64 rows, batch 8, 2 repeats
    python benchmarks/engine_settings.py --rows 32 --repeats 1 --configs padding_free:fp32 padded:fp32
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def machine() -> dict:
    import torch

    from ftkit.models.device import cpu_name, cpu_supports_bf16

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "native_bf16": cpu_supports_bf16(),
        "python": platform.python_version(),
    }


def run_one(data_dir: Path, batching: str, precision: str, args, work: Path) -> dict:
    name = f"bench-{batching}-{precision}-{time.time_ns()}"
    spec = {
        "name": name,
        "base_model_id": "bundled",
        "dataset": {"id": str(data_dir), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "n_epochs": 1,
            "batch_size": args.batch_size,
            "learning_rate": 2e-4,
            "mask_prompt_labels": True,
            "lora": {"r": 8, "alpha": 16},
        },
        "local": {
            "batching": batching,
            "precision": precision,
            "max_seq_length": args.max_seq_length,
            "max_steps": args.steps,
            "output_dir": str(work / "runs"),
            "save_steps": 10_000,
        },
    }
    job_file = work / f"{name}.json"
    job_file.write_text(json.dumps(spec))
    t = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "ftkit", "train", str(job_file), "--quiet"], capture_output=True, text=True
    )
    wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(out.stdout[-2000:] + out.stderr[-2000:])
    from ftkit.job.store import get_job

    rows = [r for r in get_job(name, work / "runs").metrics() if r["train_loss"] is not None]
    # the first step pays one-off costs (allocation, kernel selection): measure steps 2..N
    t_train = rows[-1]["elapsed"] - rows[0]["elapsed"]
    steps = len(rows) - 1
    trained = rows[-1]["trained_tokens"] - rows[0]["trained_tokens"]
    seen = rows[-1]["tokens_seen"] - rows[0]["tokens_seen"]
    return {
        "batching": batching,
        "precision": precision,
        "wall_s": round(wall, 1),
        "steps": steps,
        "steps_per_s": steps / t_train,
        "trained_tokens_per_s": trained / t_train,
        "real_tokens_per_s": seen / t_train,
        "final_train_loss": rows[-1]["train_loss"],
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=64)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (first one not timed)")
    p.add_argument("--max-seq-length", type=int, default=512)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--configs", nargs="+", default=["padding_free:fp32", "padded:fp32", "padding_free:bf16"])
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()

    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa

    work = Path(tempfile.mkdtemp(prefix="ftkit-bench-"))
    data = prepare_pubmedqa(work / "data", max_train=args.rows, max_validation=2, max_test=2)
    configs = [tuple(c.split(":")) for c in args.configs]
    runs = []
    for r in range(args.repeats):
        for batching, precision in configs:  # alternated so drift in machine load hits every config alike
            res = run_one(data.out, batching, precision, args, work)
            res["repeat"] = r
            runs.append(res)
            print(json.dumps(res), flush=True)

    summary = []
    for batching, precision in configs:
        mine = [x for x in runs if x["batching"] == batching and x["precision"] == precision]
        summary.append(
            {
                "batching": batching,
                "precision": precision,
                "steps_per_s": statistics.median(x["steps_per_s"] for x in mine),
                "trained_tokens_per_s": statistics.median(x["trained_tokens_per_s"] for x in mine),
                "real_tokens_per_s": statistics.median(x["real_tokens_per_s"] for x in mine),
            }
        )
    date = time.strftime("%Y-%m-%d")
    result = {"date": date, "machine": machine(), "settings": vars(args), "runs": runs, "summary": summary}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"engine_settings-{date}.json").write_text(json.dumps(result, indent=2))
    lines = [
        f"# Engine settings, {date}",
        "",
        f"Machine: {result['machine']}",
        "",
        f"Bundled SmolLM2-135M-Instruct, LoRA r8, {args.rows} PubMedQA rows, batch {args.batch_size}, "
        f"max_seq_length {args.max_seq_length}, {args.steps} steps per run (first untimed), "
        f"{args.repeats} repeats, medians.",
        "",
        "| batching | precision | steps/s | trained tokens/s | real tokens/s |",
        "|---|---|---|---|---|",
    ]
    for s in summary:
        lines.append(
            f"| {s['batching']} | {s['precision']} | {s['steps_per_s']:.3f} | "
            f"{s['trained_tokens_per_s']:.1f} | {s['real_tokens_per_s']:.1f} |"
        )
    (out / f"engine_settings-{date}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
