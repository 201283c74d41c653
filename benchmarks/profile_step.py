"""Where ftkit's training time goes: torch.profiler over real optimizer steps of the engine.

Runs ``ftkit.train.engine.train`` on the bundled SmolLM2-135M-Instruct (LoRA r 8 / alpha 16, real official-split
PubMedQA rows, the same job as train_throughput.py) and profiles steps 2..N+1 (step 1 is warm-up). Reports the time per
operator group (matrix multiplies, attention, cross-entropy, element-wise, optimizer, ...), the GFLOP/s the matrix
multiplies themselves reached (FLOPs counted by the profiler from their shapes) against this machine's ``F.linear``
peak measured in the same run, and the top operators. Writes JSON + markdown to ``--out``.

    python benchmarks/profile_step.py                      # batch 4, max length 512, 3 profiled steps
    python benchmarks/profile_step.py --precision fp32     # as above in fp32 whatever the CPU
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

# operator name -> group; first match wins, anything else is "other"
GROUPS = (
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear", "aten::baddbmm")),
    ("attention", ("scaled_dot_product", "aten::_softmax", "aten::softmax", "flash_attention")),
    ("cross-entropy", ("log_softmax", "nll_loss", "cross_entropy")),
    ("optimizer", ("Optimizer.step", "_fused_adam", "aten::_foreach", "adam")),
    (
        "copy / layout",
        ("aten::copy_", "aten::contiguous", "aten::clone", "aten::cat", "aten::to", "aten::_to_copy"),
    ),
    (
        "element-wise",
        (
            "aten::mul",
            "aten::add",
            "aten::silu",
            "aten::pow",
            "aten::mean",
            "aten::rsqrt",
            "aten::neg",
            "aten::div",
            "aten::sum",
            "aten::sub",
            "aten::where",
            "aten::fill_",
            "aten::zero_",
            "aten::embedding",
            "aten::index",
        ),
    ),
)


def group_of(name: str) -> str:
    low = name.lower()
    for group, keys in GROUPS:
        if any(k.lower() in low for k in keys):
            return group
    return "other"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=16, help="training rows (default 16)")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--steps", type=int, default=3, help="profiled optimizer steps after one warm-up step")
    p.add_argument(
        "--precision", default="auto", choices=("auto", "fp32", "bf16"), help="local.precision (default auto)"
    )
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()

    import torch
    from torch.profiler import ProfilerActivity, profile, schedule
    from train_throughput import machine, measure_peaks
    from transformers import Trainer, TrainerCallback

    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
    from ftkit.files import write_json, write_text
    from ftkit.train.engine import train

    work = Path(tempfile.mkdtemp(prefix="ftkit-profile-"))
    data = prepare_pubmedqa(
        work / "data",
        source=args.source if Path(args.source).is_file() else None,
        max_train=max(args.rows, args.batch_size * (args.steps + 1)),
        max_validation=4,
        max_test=2,
    )
    peaks = measure_peaks("cpu")
    prof = profile(
        activities=[ProfilerActivity.CPU],
        schedule=schedule(wait=0, warmup=1, active=args.steps, repeat=1),
        with_flops=True,
    )
    clock = {}

    class _Profile(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            prof.start()

        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == 1:
                clock["t0"] = time.perf_counter()

        def on_step_end(self, a, state, control, **kw):
            prof.step()
            if state.global_step == args.steps + 1:
                clock["t1"] = time.perf_counter()
                prof.stop()

    init = Trainer.__init__

    def __init__(self, *a, **kw):  # the engine builds its own Trainer; add the profiler's callback to it
        init(self, *a, **kw)
        self.add_callback(_Profile())

    Trainer.__init__ = __init__
    job = train(
        {
            "name": "profile",
            "base_model_id": "bundled",
            "dataset": {"id": str(data.out), "prompt_column": "prompt", "answer_column": "answer"},
            "hyperparameters": {
                "batch_size": args.batch_size,
                "learning_rate": 2e-4,
                "mask_prompt_labels": True,
                "n_evals": 1,
                "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
            },
            "local": {
                "max_seq_length": args.max_length,
                "max_steps": args.steps + 1,
                "output_dir": str(work / "runs"),
                "seed": 42,
                "precision": args.precision,
            },
        },
        quiet=True,
    )
    # the share is against the peak of the precision the engine trained in (auto picks bf16 on CPUs where it is faster)
    precision = job.record["precision"]
    wall = clock["t1"] - clock["t0"]
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total_us = sum(e.self_cpu_time_total for e in events)
    groups: dict[str, float] = {}
    for e in events:
        groups[group_of(e.key)] = groups.get(group_of(e.key), 0.0) + e.self_cpu_time_total
    mm = [e for e in events if group_of(e.key) == "matmul"]
    mm_flops = sum(e.flops or 0 for e in mm)
    mm_s = sum(e.self_cpu_time_total for e in mm) / 1e6
    # Self CPU time is summed over threads where intra-op work is attributed per thread; scale to the wall time
    # of the profiled steps so shares add up to what a user waits for.
    scale = wall / (total_us / 1e6)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(),
        "settings": vars(args),
        "peaks": peaks,
        "profiled_steps": args.steps,
        "wall_s": wall,
        "profiled_cpu_s": total_us / 1e6,
        "groups_s": {g: round(us / 1e6 * scale, 3) for g, us in sorted(groups.items(), key=lambda kv: -kv[1])},
        "matmul_gflop": mm_flops / 1e9,
        "matmul_gflops_per_s": mm_flops / 1e9 / (mm_s * scale) if mm_s else None,
        "top_ops": [
            {
                "op": e.key,
                "self_s": round(e.self_cpu_time_total / 1e6 * scale, 3),
                "calls": e.count,
                "gflop": round((e.flops or 0) / 1e9, 2),
            }
            for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:20]
        ],
        "torch_threads": torch.get_num_threads(),
        "precision": precision,
    }
    lines = [
        f"# Where ftkit's training step time goes, {result['date']}",
        "",
        f"Machine: {result['machine']['cpu']}, {result['machine']['cores']} cores, torch {result['machine']['torch']}. "
        f"Job: bundled SmolLM2-135M-Instruct, LoRA r 8 / alpha 16, batch {args.batch_size}, max length "
        f"{args.max_length}, real PubMedQA rows, ftkit's defaults, precision {args.precision} "
        f"(trained in {precision}); {args.steps} optimizer steps profiled after one "
        f"warm-up step: {wall:.1f} s wall ({wall / args.steps:.1f} s/step).",
        "",
        "| operator group | seconds | share |",
        "|---|---|---|",
    ]
    lines += [f"| {g} | {s:.2f} | {s / wall:.0%} |" for g, s in result["groups_s"].items()]
    peak = peaks[precision]["model_576x1536"]
    if result["matmul_gflops_per_s"]:
        lines += [
            "",
            f"Matrix multiplies: {result['matmul_gflop']:.0f} GFLOP in the profiled steps at "
            f"{result['matmul_gflops_per_s']:.0f} GFLOP/s = {result['matmul_gflops_per_s'] / peak:.0%} of this "
            f"machine's {precision} `F.linear` peak ({peak:.0f} GFLOP/s at 2048 x 576 x 1536; fp32 "
            f"{peaks['fp32']['model_576x1536']:.0f}, bf16 {peaks['bf16']['model_576x1536']:.0f}).",
        ]
    lines += ["", "| top operators (self time) | seconds | calls | GFLOP |", "|---|---|---|---|"]
    lines += [f"| `{o['op']}` | {o['self_s']:.2f} | {o['calls']} | {o['gflop']} |" for o in result["top_ops"]]
    md = "\n".join(lines) + "\n"
    out = Path(args.out)
    write_json(out / f"profile_step-{result['date']}.json", result)
    write_text(out / f"profile_step-{result['date']}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(HERE))
    sys.exit(main())
