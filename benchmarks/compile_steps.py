"""torch.compile against eager for ftkit's LoRA training on a CPU: the same optimizer steps timed one by one.

Trains the bundled SmolLM2-135M-Instruct through ``ftkit.train.engine.train`` twice, in fresh processes, with
``local.torch_compile`` false and then true: LoRA r 16 / alpha 32 on every linear layer, batch 8, max length 512,
fp32, the cookbook's PubMedQA rows (reason answers, results sections), the same seed, so both runs see the same
batches in the same order. Each step's wall time is recorded: the first steps of the compiled run hold the
compilation (inductor recompiles once the second batch shape shows the lengths vary), the later ones the steady
state. Reports the per-step ratio, the compile overhead and the break-even step count behind
``local.torch_compile: auto`` (ftkit.train.plan.COMPILE_MIN_STEPS), and the losses of both runs.

    python benchmarks/compile_steps.py [--steps 6] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from eval_throughput import load_average, machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def one_run(compiled: bool, steps: int, source: str) -> dict:
    """In this process: train the job once; per-step seconds and train losses."""
    from transformers import Trainer, TrainerCallback

    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
    from ftkit.train.engine import train

    work = Path(tempfile.mkdtemp(prefix="ftkit-compile-"))
    data = prepare_pubmedqa(
        work / "data",
        source=source if Path(source).is_file() else None,
        max_train=8 * steps,
        max_validation=4,
        max_test=2,
        answer_style="reason",
        context="results",
    )
    seconds: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            seconds.append(round(time.perf_counter() - self.t, 2))

    init = Trainer.__init__

    def __init__(self, *a, **kw):  # the engine builds its own Trainer; add the clock to it
        init(self, *a, **kw)
        self.add_callback(StepClock())

    Trainer.__init__ = __init__
    lora = {"r": 16, "alpha": 32, "dropout": 0.0}
    job = train(
        {
            "name": "compile",
            "base_model_id": "bundled",
            "dataset": {"id": str(data.out), "prompt_column": "prompt", "answer_column": "answer"},
            "hyperparameters": {
                "batch_size": 8,
                "learning_rate": 3e-4,
                "mask_prompt_labels": True,
                "n_evals": 1,
                "lora": lora,
            },
            "local": {
                "max_seq_length": 512,
                "max_steps": steps,
                "output_dir": str(work / "runs"),
                "seed": 42,
                "torch_compile": compiled,
                "precision": "fp32",
            },
        },
        quiet=True,
    )
    return {"step_s": seconds, "train_loss": [r["train_loss"] for r in job.metrics() if r["train_loss"] is not None]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=6, help="optimizer steps per run (the first 2 hold the compile)")
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--one", choices=("eager", "compiled"), help=argparse.SUPPRESS)  # a child process's run
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_run(args.one == "compiled", args.steps, args.source)))
        return 0

    load_start = load_average()
    runs = {}
    for name in ("eager", "compiled"):
        cmd = [sys.executable, __file__, "--one", name, "--steps", str(args.steps), "--source", args.source]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        runs[name] = json.loads(out.strip().splitlines()[-1])
    eager, comp = runs["eager"]["step_s"], runs["compiled"]["step_s"]
    ratios = [round(e / c, 2) for e, c in zip(eager[2:], comp[2:], strict=True)]
    overhead = sum(comp[:2]) - sum(eager[:2])
    saved = statistics.median(eager[2:]) - statistics.median(comp[2:])
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(load_start),
        "runs": runs,
        "steady_ratios": ratios,
        "compile_overhead_s": round(overhead, 1),
        "saved_per_step_s": round(saved, 2),
        "break_even_steps": round(2 + overhead / saved) if saved > 0 else None,
        "max_loss_difference": max(abs(a - b) for a, b in zip(*(r["train_loss"] for r in runs.values()), strict=True)),
    }
    stem = Path(args.out) / f"compile_steps-{result['date']}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    md = (
        "\n".join(
            [
                f"# torch.compile vs eager, LoRA training on a CPU, {result['date']}",
                "",
                f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}; load average {m['load_average_start']} at start, "
                f"{m['load_average_end']} at end. Bundled SmolLM2-135M, LoRA r 16, batch 8 x <= 512 tokens, fp32.",
                "",
                f"- eager step seconds: {eager}",
                f"- compiled step seconds: {comp}",
                f"- steady state (steps 3..{args.steps}), eager / compiled per step: {ratios} (median "
                f"{statistics.median(ratios)}x)",
                f"- compile overhead (steps 1-2): {overhead:.0f} s; saved per steady step {saved:.1f} s; "
                f"break-even after about {result['break_even_steps']} steps",
                f"- largest train-loss difference between the runs: {result['max_loss_difference']:.1e}",
                "",
                f"Run: `python benchmarks/compile_steps.py --steps {args.steps}`",
            ]
        )
        + "\n"
    )
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
