"""Time to a good model: the cookbook's full-data CPU recipe, timed from the start of data preparation, with the
validation accuracy and macro-F1 at each of its evaluations and the official test set scored at the end.

    python benchmarks/time_to_accuracy.py [--work out/time-to-accuracy] [--out benchmarks/results]

The recipe is ``ftkit notebooks run --preset full`` (notebooks 01 -> 03 -> 05's tuned evaluation) without the
notebooks: all 450 training rows, the 50 validation rows and the 500 official test rows, two epochs, four
evaluations, learning rate 3e-4, the checkpoint with the best validation macro-F1 kept. The curve answers "how many
minutes until the tuned model beats the majority baseline" (always "yes": the test set's majority is 55.2%
accuracy / 0.237 macro-F1). The test set is scored once, on the kept checkpoint: scoring 500 rows with reasoning
after every evaluation would cost more than the training. Writes ``time_to_accuracy-<date>.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import time
from pathlib import Path

from eval_throughput import load_average, machine

from ftkit.cookbook.defaults import PRESETS
from ftkit.cookbook.steps import build_job, paths
from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
from ftkit.results.evaluation import evaluate
from ftkit.results.inference import DECISIONS
from ftkit.results.scores import classification_metrics
from ftkit.train.engine import train

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
EVAL_KEYS = ("step", "epoch", "wall_s", "eval_loss", "eval_accuracy", "eval_macro_f1", "eval_auc")
DATA_KEYS = ("max_train", "max_validation", "max_test")  # notebook 01's parameters; the rest are notebook 02's


def majority(csv_path: Path) -> dict:
    """Accuracy and macro-F1 of always answering the most common gold label of a split."""
    with open(csv_path, newline="") as f:
        gold = [r["final_decision"] for r in csv.DictReader(f)]
    top = statistics.mode(gold)
    s = classification_metrics(gold, [top] * len(gold), DECISIONS)
    return {"label": top, "n": len(gold), "accuracy": s["accuracy"], "macro_f1": s["macro_f1"]}


class Clock:
    """Wall seconds since the benchmark started, stamped on every metric record as it is written."""

    def __init__(self):
        self.t0 = time.perf_counter()
        self.evals: list[dict] = []

    def now(self) -> float:
        return round(time.perf_counter() - self.t0, 1)

    def __call__(self, record: dict) -> None:
        if record.get("eval_accuracy") is not None:
            self.evals.append({**record, "wall_s": self.now()})


def run(args) -> dict:
    clock, load_start = Clock(), load_average()
    preset = PRESETS["full"]
    p = paths(args.work)
    source = Path(args.source)
    prepare_pubmedqa(p.data, source=source if source.is_file() else None, answer_style="reason", context="results")
    prepared_s = clock.now()
    overrides = {k: v for k, v in preset.items() if k not in DATA_KEYS}
    if args.max_steps:
        overrides["max_steps"] = args.max_steps
    spec = build_job(p.run_dir, "pubmedqa-lora", **overrides)
    job = train(spec, fresh=True, quiet=True, on_record=clock)
    trained_s = clock.now()
    test = p.data / "test.csv"
    result = evaluate(str(job.path), test, out=p.eval / "tuned.predictions.json", method="reason", limit=args.test_rows)
    done_s = clock.now()
    return {
        "machine": machine(load_start),
        "recipe": {"preset": "full", **overrides, "job": spec.to_service_dict()},
        "seconds": {"prepare": prepared_s, "train": round(trained_s - prepared_s, 1), "test_eval": done_s - trained_s},
        "total_s": done_s,
        "evaluations": [
            {
                k: r.get(k)
                for k in ("step", "epoch", "wall_s", "eval_loss", "eval_accuracy", "eval_macro_f1", "eval_auc")
            }
            for r in clock.evals
        ],
        "kept_step": (job.record.get("result") or {}).get("step"),
        "test": {
            "n": result.n,
            "accuracy": result.accuracy,
            "macro_f1": result.macro_f1,
            "seconds": done_s - trained_s,
        },
        "majority": {"validation": majority(p.data / "validation.csv"), "test": majority(p.data / "test.csv")},
    }


def first_beating(evals: list[dict], base: dict, key: str) -> dict | None:
    return next((e for e in evals if (e[f"eval_{key}"] or 0) > base[key]), None)


def report(r: dict, command: str) -> str:
    m, maj = r["machine"], r["majority"]
    lines = [
        f"# Time to a good model, {time.strftime('%Y-%m-%d')}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch {m['torch']}; "
        f"load average {m['load_average_start']} at start, {m['load_average_end']} at end.",
        f"Recipe: the cookbook's full preset ({r['recipe']['n_epochs']} epochs, {r['recipe']['n_evals']} evaluations, "
        f"learning rate {r['recipe']['learning_rate']}); precision as the engine picks it on this CPU.",
        "",
        f"Wall time: prepare {r['seconds']['prepare']:.0f} s, train {r['seconds']['train']:.0f} s, test evaluation "
        f"({r['test']['n']} rows, reason method) {r['seconds']['test_eval']:.0f} s; "
        f"**total {r['total_s'] / 60:.1f} min** (target: 20 min).",
        "",
        "| step | minutes since start | val loss | val accuracy | val macro-F1 | val AUC |",
        "|---|---|---|---|---|---|",
    ]
    for e in r["evaluations"]:
        auc = f"{e['eval_auc']:.3f}" if e["eval_auc"] is not None else ""
        lines.append(
            f"| {e['step']} | {e['wall_s'] / 60:.1f} | {e['eval_loss']:.4f} | {e['eval_accuracy']:.3f} | "
            f"{e['eval_macro_f1']:.3f} | {auc} |"
        )
    v = maj["validation"]
    lines += [
        "",
        f"Majority baseline (always {v['label']}): validation {v['accuracy']:.3f} / {v['macro_f1']:.3f}, "
        f"test {maj['test']['accuracy']:.3f} / {maj['test']['macro_f1']:.3f} (accuracy / macro-F1).",
    ]
    for key in ("macro_f1", "accuracy"):
        hit = first_beating(r["evaluations"], v, key)
        when = f"step {hit['step']}, {hit['wall_s'] / 60:.1f} min after the start" if hit else "never"
        lines.append(f"- validation {key.replace('_', '-')} first above the majority's: {when}")
    t = r["test"]
    lines += [
        f"- test set (official {t['n']} rows), kept checkpoint step {r['kept_step']}: accuracy {t['accuracy']:.3f}, "
        f"macro-F1 {t['macro_f1']:.3f}",
        "",
        f"Run: `{command}`",
    ]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default=str(ROOT / "out" / "time-to-accuracy"), help="run folder (data, job, eval)")
    ap.add_argument("--source", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    ap.add_argument("--max-steps", type=int, default=None, help="stop early (a quick check of the script)")
    ap.add_argument("--test-rows", type=int, default=None, help="score only the first N test rows (a quick check)")
    ap.add_argument("--out", default=str(HERE / "results"))
    args = ap.parse_args()
    r = run(args)
    stem = Path(args.out) / f"time_to_accuracy-{time.strftime('%Y-%m-%d')}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(r, indent=2, default=str) + "\n")
    command = "python benchmarks/time_to_accuracy.py" + "".join(
        f" --{k.replace('_', '-')} {v}" for k, v in (("max_steps", args.max_steps), ("test_rows", args.test_rows)) if v
    )
    stem.with_suffix(".md").write_text(report(r, command))
    print(stem.with_suffix(".md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
