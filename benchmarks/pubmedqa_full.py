"""The full-data PubMedQA recipe, measured: the cookbook with ``--preset full`` (all 450 training rows, the 50
validation rows, the 500 official test rows; two epochs, four evaluations), then the predictions scored against the
official ground truth with ``ftkit score``.

    python benchmarks/pubmedqa_full.py [--out benchmarks/results] [--work out/pubmedqa-full]

Runs notebooks 01, 02, 03 and 05 one after the other (each timed; 04 only plots, 06 trains a second job through the
server) and writes ``pubmedqa_full-<date>/`` under ``--out``: the official-format predictions (``{pmid: decision}``)
of the tuned and base models with their metrics, the comparison table, the training job's ``metrics.jsonl`` (the
validation curves) and ``job.log``, and ``summary.json`` / ``summary.md`` (wall time per notebook, the figures, the
machine, the load average at start).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from ftkit.cookbook.runner import comparison_text
from ftkit.models.device import cpu_name
from ftkit.results.evaluation import score_against_truth

NOTEBOOKS = ("01", "02", "03", "05")
ANCHORS = "majority 55.2% / 0.237 macro-F1; BioBERT fine-tuned 68.1%; human 78.0% (PubMedQA paper, reasoning-required)"


def run_notebook(nb: str, work: Path) -> float:
    """One notebook of the suite with the full preset; its wall time in seconds."""
    cmd = ["ftkit", "notebooks", "run", "--preset", "full", "--out", str(work), "--only", nb]
    t = time.perf_counter()
    subprocess.run([Path(sys.executable).parent / cmd[0], *cmd[1:]], check=True)
    return time.perf_counter() - t


def score(predictions: Path) -> dict:
    """What ``ftkit score`` computes: the official-format predictions against the official test_ground_truth.json."""
    r = score_against_truth(predictions)
    return {"n": len(r.gold), "accuracy": r.accuracy, "macro_f1": r.macro_f1}


def collect(work: Path, dest: Path, seconds: dict, load: tuple) -> dict:
    """Copy the results worth keeping into ``dest`` and write the summary."""
    dest.mkdir(parents=True, exist_ok=True)
    job = next(work.glob("runs/*/metrics.jsonl")).parent
    for f in (job / "metrics.jsonl", job / "job.log", job / "best.json", work / "eval" / "comparison.csv"):
        if f.is_file():
            shutil.copy(f, dest / f.name)
    scores = {}
    for p in sorted((work / "eval").glob("*.predictions.json")):
        shutil.copy(p, dest / p.name)
        metrics = p.with_name(p.name.replace(".json", ".metrics.json"))
        if metrics.is_file():
            shutil.copy(metrics, dest / metrics.name)
        scores[p.name.split(".")[0]] = score(p)
    summary = {
        "command": "python benchmarks/pubmedqa_full.py",
        "date": time.strftime("%Y-%m-%d"),
        "cpu": cpu_name(),
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "load_average_at_start": load,
        "wall_s": {nb: round(s, 1) for nb, s in seconds.items()},
        "official_scores": scores,
        "anchors": ANCHORS,
    }
    (dest / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    table = comparison_text(work) or "(no comparison table)"
    md = [
        f"# PubMedQA full-data recipe, {summary['date']}",
        "",
        f"`{summary['command']}` on {summary['cpu']} ({summary['threads']} threads), torch {summary['torch']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in load)}.",
        "",
        "Wall time per notebook (s): " + ", ".join(f"{nb} {s:.0f}" for nb, s in summary["wall_s"].items()),
        "",
        "Official test set (500 rows), scored by `ftkit score` against test_ground_truth.json:",
        "",
        "| model | accuracy | macro-F1 |",
        "|---|---|---|",
        *[f"| {m} | {s['accuracy']:.3f} | {s['macro_f1']:.3f} |" for m, s in scores.items()],
        "",
        f"Published anchors: {ANCHORS}.",
        "",
        "Notebook 05's table:",
        "",
        "```",
        table,
        "```",
        "",
    ]
    (dest / "summary.md").write_text("\n".join(md))
    return summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="benchmarks/results", help="where pubmedqa_full-<date>/ is written")
    ap.add_argument("--work", default="out/pubmedqa-full", help="the cookbook's run folder (replaced)")
    args = ap.parse_args()
    work = Path(args.work).resolve()
    shutil.rmtree(work, ignore_errors=True)
    load = os.getloadavg()
    seconds = {nb: run_notebook(nb, work) for nb in NOTEBOOKS}
    seconds["total"] = sum(seconds.values())
    dest = Path(args.out) / f"pubmedqa_full-{time.strftime('%Y-%m-%d')}"
    summary = collect(work, dest, seconds, load)
    print((dest / "summary.md").read_text())
    print(json.dumps(summary["official_scores"], indent=2))


if __name__ == "__main__":
    main()
