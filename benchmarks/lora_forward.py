"""ftkit's lean LoRA forward against peft's own, in one process on the same batch, steps alternated.

Loads the bundled SmolLM2-135M-Instruct in fp32 with LoRA r 16 / alpha 32 on every linear layer (the cookbook's
adapters), and times whole optimizer steps (forward with labels, backward, AdamW) on one fixed batch of random token
ids, the first 3/4 of each row's labels masked as a prompt would be. Between steps every LoRA layer is switched
between ``ftkit.models.lora_forward``'s forward and peft's, alternating which goes first, so drift in the machine's
load hits both alike. A difference of a few percent is inside the noise of separate fresh-process runs
(``train_throughput.py``); here both forwards share the process, the weights and the batch.

    python benchmarks/lora_forward.py [--steps 4] [--batch-size 8] [--length 512] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from pathlib import Path

from eval_throughput import load_average, machine

from ftkit.files import write_json, write_text

HERE = Path(__file__).resolve().parent


def switch(model, lean: bool) -> None:
    """Every LoRA linear layer of ``model`` on the lean forward (``lean``) or back on peft's class forward."""
    from peft.tuners.lora.layer import Linear

    from ftkit.models.lora_forward import use_lean_lora_forward

    for module in model.modules():
        if type(module) is Linear and "forward" in module.__dict__:
            del module.forward
    if lean and use_lean_lora_forward(model) == 0:
        raise SystemExit("the lean forward patched no layer (FTKIT_KERNELS=off?)")


def run(steps: int, batch_size: int, length: int) -> dict:
    import torch
    from transformers import AutoModelForCausalLM

    from ftkit.models.bundled import ensure
    from ftkit.models.loading import apply_lora

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(ensure(quiet=True), dtype=torch.float32)
    model = apply_lora(model, 16, 32, 0.0, [], None)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, model.config.vocab_size, (batch_size, length))
    labels = ids.clone()
    labels[:, : length * 3 // 4] = -100

    def step() -> tuple[float, float]:
        t = time.perf_counter()
        loss = model(input_ids=ids, labels=labels).loss
        loss.backward()
        opt.step()
        opt.zero_grad()
        return time.perf_counter() - t, loss.item()

    seconds = {"lean": [], "peft": []}
    for name in ("lean", "peft"):  # warm-up: first-call allocations
        switch(model, name == "lean")
        step()
    for i in range(steps):
        for name in ("lean", "peft") if i % 2 == 0 else ("peft", "lean"):
            switch(model, name == "lean")
            seconds[name].append(round(step()[0], 3))
    lean, peft = statistics.median(seconds["lean"]), statistics.median(seconds["peft"])
    return {
        "seconds_per_step": seconds,
        "median_s": {"lean": lean, "peft": peft},
        "speedup_lean_over_peft": round(peft / lean, 3),
        "tokens_per_step": batch_size * length,
    }


def report(result: dict) -> str:
    m, r = result["machine"], result["result"]
    return "\n".join(
        [
            f"# LoRA forward: ftkit's lean forward vs peft's, {result['date']}",
            "",
            f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads), torch {m['torch']}; "
            f"load average {m['load_average_start']} at start, {m['load_average_end']} at end.",
            f"Bundled SmolLM2-135M-Instruct, fp32, LoRA r 16 / alpha 32 on every linear layer; one batch of "
            f"{result['args']['batch_size']} x {result['args']['length']} tokens; whole optimizer steps, alternated.",
            "",
            "| forward | seconds per step | median |",
            "|---|---|---|",
            f"| ftkit lean | {r['seconds_per_step']['lean']} | {r['median_s']['lean']:.2f} |",
            f"| peft | {r['seconds_per_step']['peft']} | {r['median_s']['peft']:.2f} |",
            "",
            f"**lean forward {r['speedup_lean_over_peft']:.3f}x peft's** (median step time ratio).",
            "",
            f"Run: `{result['command']}`",
            "",
        ]
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=4, help="timed steps per forward (after one warm-up each)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--length", type=int, default=512)
    p.add_argument("--out", type=Path, default=HERE / "results")
    args = p.parse_args()
    start = load_average()
    result = {"date": datetime.date.today().isoformat(), "args": {k: str(v) for k, v in vars(args).items()}}
    result["args"].update(batch_size=args.batch_size, length=args.length)
    result["result"] = run(args.steps, args.batch_size, args.length)
    result["machine"] = machine(start)
    result["command"] = (
        f"python benchmarks/lora_forward.py --steps {args.steps} --batch-size {args.batch_size} --length {args.length}"
    )
    stem = args.out / f"lora_forward-{result['date']}"
    write_json(stem.with_suffix(".json"), result)
    text = report(result)
    write_text(stem.with_suffix(".md"), text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
