"""GPU checks of what the CPU tests cannot reach: QLoRA on CUDA, and FSDP over NCCL when the machine has 2+ GPUs.

Each check runs ftkit's real engine on the bundled SmolLM2-135M and a small generated CSV:

- ``qlora-4bit``, ``qlora-8bit``: local.quantization on CUDA (bitsandbytes' CUDA kernels, bf16 compute, the base
  loaded straight onto the GPU): the job completes, the training loss falls, the adapter is saved; the peak of
  ``torch.cuda.max_memory_allocated`` beside ``ftkit estimate``'s formula for the same job and an unquantised run.
- ``qlora-merged``: the 4bit job's merged export (base loaded unquantised, merge check within tolerance).
- ``fsdp``: with 2+ GPUs, ``torchrun --nproc_per_node 2`` with local.distributed fsdp against one process:
  losses within 1e-2 (bf16), adapters saved, a resume from a checkpoint.

    python benchmarks/gpu_checks.py --out gpu_checks.json    # every check this machine can run
    python benchmarks/gpu_checks.py --device cpu --steps 4 --model path/to/tiny-llama   # the script itself, on a CPU

Prints one JSON line per check and exits 1 if one failed, 2 without CUDA (unless --device cpu).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path


def job_spec(tmp: Path, name: str, device: str, steps: int, model: str = "bundled", **local) -> dict:
    data = tmp / "data"
    if not data.is_dir():
        data.mkdir(parents=True)
        for split, numbers in (("train", range(64)), ("validation", range(1000, 1008))):
            rows = "".join(f'"Is {i} an even number?",{"yes" if i % 2 == 0 else "no"}\n' for i in numbers)
            (data / f"{split}.csv").write_text("prompt,answer\n" + rows)
    return {
        "name": name,
        "base_model_id": model,
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {"batch_size": 8, "learning_rate": 1e-3, "n_evals": 1, "lora": {"r": 8, "alpha": 16}},
        "local": {"output_dir": str(tmp / "runs"), "device": device, "max_steps": steps, "labels": [], **local},
    }


def run_job(spec: dict) -> dict:
    import torch

    from ftkit.train.engine import train
    from ftkit.train.estimate import estimate

    formula = estimate(spec, measure=False).memory
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    job = train(spec, quiet=True)
    losses = [r["train_loss"] for r in job.metrics() if r["train_loss"] is not None]
    return {
        "job": job,
        "losses": losses,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None,
        "formula_gib": formula.total / 2**30 if formula else None,
        "formula_weights_gib": formula.weights / 2**30 if formula else None,
    }


def check_qlora(tmp: Path, device: str, steps: int, model: str) -> list[dict]:
    out, jobs = [], {}
    for quant in ("none", "4bit", "8bit"):
        r = run_job(job_spec(tmp, f"q-{quant}", device, steps, model, quantization=quant))
        jobs[quant] = r["job"]
        ok = r["job"].status == "completed" and r["losses"][-1] < r["losses"][0]
        ok = ok and (r["job"].model_dir / "adapter_model.safetensors").is_file()
        out.append({"check": f"qlora-{quant}", "ok": ok, **{k: v for k, v in r.items() if k != "job"}})
    from ftkit.export.stage import stage_export

    (tmp / "merged").mkdir()
    manifest = stage_export(jobs["4bit"], tmp / "merged", merged=True, quiet=True)
    check = manifest.get("merge_check") or {}
    ok = bool(check.get("ok")) and check.get("trained_on_quantization") == "4bit"
    out.append({"check": "qlora-merged", "ok": ok, "merge_check": check})
    return out


def check_fsdp(tmp: Path, steps: int, model: str) -> dict:
    import torch

    if torch.cuda.device_count() < 2:
        return {"check": "fsdp", "ok": None, "skipped": f"{torch.cuda.device_count()} GPU(s); FSDP needs 2"}
    from ftkit.job import store as jobstore

    single = run_job(job_spec(tmp / "one", "fsdp", "cuda", steps, model, distributed="fsdp", save_steps=2))
    spec = job_spec(tmp / "two", "fsdp", "cuda", steps, model, distributed="fsdp", save_steps=2)
    job_file = tmp / "two" / "job.json"
    job_file.write_text(json.dumps(spec))
    torchrun = [str(Path(sys.executable).with_name("torchrun")), "--nproc_per_node=2", "-m", "ftkit", "train"]
    first = subprocess.run([*torchrun, str(job_file), "--quiet"], capture_output=True, text=True)
    job = jobstore.get_job("fsdp", tmp / "two" / "runs")
    losses = [r["train_loss"] for r in job.metrics() if r["train_loss"] is not None]
    close = len(losses) == len(single["losses"]) and all(
        abs(a - b) < 1e-2 for a, b in zip(losses, single["losses"], strict=True)
    )
    last = sorted((job.path / "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    shutil.rmtree(last[-1])
    shutil.rmtree(job.model_dir)
    job.update(status="failed", pid=None, error="gpu_checks: simulated crash")
    again = subprocess.run([*torchrun, str(job_file), "--quiet"], capture_output=True, text=True)
    resumed = "resuming from" in (job.path / "job.log").read_text() and job.status == "completed"
    ok = first.returncode == 0 and again.returncode == 0 and close and resumed
    tail = (first.stderr + again.stderr)[-1500:] if not ok else ""
    return {"check": "fsdp", "ok": ok, "losses": losses, "single": single["losses"], "resumed": resumed, "log": tail}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    p.add_argument("--steps", type=int, default=8, help="optimizer steps per training run (default 8)")
    p.add_argument("--model", default="bundled", help="base model reference (default: the bundled SmolLM2)")
    p.add_argument("--out", type=Path, help="also write the results as a JSON list here")
    args = p.parse_args()
    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print("gpu_checks: no CUDA device (use --device cpu to check the script itself)", file=sys.stderr)
        return 2
    results = []
    with tempfile.TemporaryDirectory(prefix="ftkit-gpu-checks-") as tmp:
        results += check_qlora(Path(tmp) / "q", args.device, args.steps, args.model)
        if args.device == "cuda":
            results.append(check_fsdp(Path(tmp) / "f", args.steps, args.model))
    for r in results:
        print(json.dumps(r, default=str))
    if args.out:
        args.out.write_text(json.dumps(results, indent=1, default=str))
    return 1 if any(r["ok"] is False for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
