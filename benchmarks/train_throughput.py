"""Training throughput: ftkit vs TRL's SFTTrainer vs a plain Trainer recipe, each at its defaults.

All three train LoRA (r 8, alpha 16, every linear layer) on the bundled SmolLM2-135M-Instruct with the same
official-split PubMedQA training rows, learning rate, effective batch size, max length and one epoch (or
--max-steps), then the same validation rows:

- ftkit: ``ftkit.train.engine.train`` with a job spec (mask_prompt_labels true, local.precision/batching "auto");
- trl: ``SFTTrainer`` on prompt-completion conversational rows, only the shared settings set in SFTConfig;
- plain: ``transformers.Trainer`` with pad-to-max-length collation and -100 on prompt and padding.

Each run is a fresh process (runs alternated: ftkit, trl, plain, ftkit, ...). Tokens are counted the same way
for all three from the actual training batches; every trained adapter is scored by one evaluation function.
The run also measures this machine's fp32/bf16 matmul peak and reports the model FLOP/s each contender
reached.

    python benchmarks/train_throughput.py                                  # 256 rows, batch 8, 3 repeats
    OMP_NUM_THREADS=1 python benchmarks/train_throughput.py --rows 16 --repeats 1 --max-steps 2 \\
        --batch-size 4 --max-length 256 --out /tmp/tt                      # smoke test
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # a worker's wall time starts here, before torch is imported

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
from pathlib import Path  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
ALL = ("ftkit", "trl", "plain")  # the default contenders
# TRL with bf16=False (for CPUs where bf16 is emulated) and ftkit in fp32 (like for like with it)
OPTIONAL = ("trl_fp32", "ftkit_fp32", "ftkit_peft_lora")


def machine() -> dict:
    import torch

    from ftkit.models.device import cpu_name, cpu_supports_bf16

    flags = ""
    try:
        flags = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("flags"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "native_bf16": cpu_supports_bf16(),
        "cpu_flags": [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile") if f" {f}" in flags],
        "cuda_device": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_at_start": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "versions": _versions(),
    }


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in ("ftkit", "transformers", "peft", "trl", "accelerate", "datasets"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def matmul_gflops(m: int, k: int, n: int, dtype, device: str, reps: int = 5, budget_s: float = 3.0) -> float:
    """Best GFLOP/s of ``F.linear`` on an (m x k) input and an (n x k) weight, as every ``nn.Linear`` runs.

    Timed until ``reps`` runs or ``budget_s`` seconds (at least one run). The weight's layout matters on CPU:
    here a bf16 ``a @ b`` with a row-major (k x n) ``b`` ran ~10x slower than the same product through
    ``F.linear``. The warm-up is a small product of the same dtype (thread pool, kernel choice), so an
    emulated dtype does not pay for a full-size warm-up.
    """
    import torch
    import torch.nn.functional as F

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    F.linear(torch.randn(256, 256, dtype=dtype, device=device), torch.randn(256, 256, dtype=dtype, device=device))
    x = torch.randn(m, k, dtype=dtype, device=device)
    w = torch.randn(n, k, dtype=dtype, device=device)
    if device == "cuda":
        F.linear(x, w)
    sync()
    best, spent, i = float("inf"), 0.0, 0
    while i < reps and (i == 0 or spent < budget_s):
        t = time.perf_counter()
        F.linear(x, w)
        sync()
        dt = time.perf_counter() - t
        best, spent, i = min(best, dt), spent + dt, i + 1
    return 2 * m * k * n / best / 1e9


def measure_peaks(device: str, max_s: float = 10.0) -> dict:
    """fp32 and bf16 matmul GFLOP/s, square (2048^3) and at the model's MLP shape (2048 tokens x 576 -> 1536).

    Where a dtype is so slow (bf16 emulated on a CPU without AVX512-BF16/AMX) that one 2048^3 matmul would
    take over ``max_s`` seconds, the square matmul is measured at the largest power-of-two size that fits
    (``size``).
    """
    import torch

    out = {}
    for name, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        probe = matmul_gflops(512, 512, 512, dtype, device, reps=2, budget_s=1.0)
        size = 2048
        while size > 512 and 2 * size**3 / (probe * 1e9) > max_s:
            size //= 2
        out[name] = {
            "square": round(matmul_gflops(size, size, size, dtype, device), 1),
            "square_size": size,
            "model_576x1536": round(matmul_gflops(2048, 576, 1536, dtype, device), 1),
        }
    return out


def run_worker_process(name: str, cfg: dict, work: Path, repeat: int) -> dict:
    result = work / f"{name}-{repeat}.json"
    log = work / f"{name}-{repeat}.log"
    cmd = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--contender",
        name,
        "--config",
        json.dumps(cfg),
        "--result",
        str(result),
    ]
    t = time.perf_counter()
    with open(log, "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
    process_s = time.perf_counter() - t
    if rc != 0 or not result.is_file():
        tail = log.read_text(errors="replace")[-3000:]
        print(f"{name} (repeat {repeat}) FAILED with exit code {rc}; log {log}:\n{tail}", flush=True)
        return {"contender": name, "repeat": repeat, "error": f"exit code {rc}", "log_tail": tail}
    res = json.loads(result.read_text())
    # the run's adapter and checkpoints are measured; keep its JSON and log, not ~150 MB per run
    shutil.rmtree(work / f"{result.stem}-work", ignore_errors=True)
    res.update(repeat=repeat, process_s=process_s)
    print(
        f"{name} (repeat {repeat}): wall {res['wall_s']:.1f} s, train {res['train_s']:.1f} s, "
        f"{res['steps']} steps, {res['real_tokens_per_s']:.0f} real tok/s, eval loss "
        f"{res['common_eval']['eval_loss']:.4f}",
        flush=True,
    )
    return res


def _stats(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


METRICS = (
    "wall_s",
    "train_s",
    "steps",
    "trained_tokens",
    "real_tokens",
    "processed_tokens",
    "trained_tokens_per_s",
    "real_tokens_per_s",
    "peak_rss_mb",
    "cuda_peak_allocated_mb",
    "own_eval_loss",
    "common_eval_loss",
    "model_gflops",
    "steady_s",
    "steady_steps",
    "steady_trained_tokens_per_s",
    "steady_real_tokens_per_s",
    "steady_model_gflops",
)


FACTS = (
    "precision",
    "batching",
    "device",
    "gradient_checkpointing",
    "torch_threads",
    "base_params",
    "data_rows",
)


def summarize(runs: list[dict], contenders: list[str], peaks: dict) -> dict:
    """Median, min and max of every metric per contender, model FLOP/s as a share of peak, ratios to TRL."""
    out = {}
    for name in contenders:
        ok = [r for r in runs if r["contender"] == name and "error" not in r]
        if not ok:
            out[name] = {"error": "every run failed"}
            continue
        for r in ok:
            r["common_eval_loss"] = r["common_eval"]["eval_loss"]
            for k, v in (r.get("steady") or {}).items():  # the steps after the warm-up (--warmup-steps)
                r[f"steady_{k}"] = v
        s = {m: _stats([r[m] for r in ok]) for m in METRICS if all(r.get(m) is not None for r in ok)}
        s["facts"] = {k: ok[0].get(k) for k in FACTS}
        peak = peaks.get(ok[0]["precision"])
        if peak:
            for key in ("", "steady_"):
                if f"{key}model_gflops" in s:
                    g = s[f"{key}model_gflops"]["median"]
                    s[f"{key}share_of_peak"] = {k: g / peak[k] for k in ("square", "model_576x1536")}
        s["failed_runs"] = sum(1 for r in runs if r["contender"] == name and "error" in r)
        out[name] = s
    ratio_metrics = ("wall_s", "train_s", "real_tokens_per_s", "trained_tokens_per_s", "peak_rss_mb")
    ratio_metrics += ("steady_trained_tokens_per_s", "steady_real_tokens_per_s", "common_eval_loss")
    for ref_name in ("trl", "trl_fp32", "plain", "ftkit_peft_lora"):
        ref = out.get(ref_name)
        if not ref or "error" in ref:
            continue
        for s in out.values():
            if "error" not in s:
                s[f"ratio_to_{ref_name}"] = {
                    m: s[m]["median"] / ref[m]["median"]
                    for m in ratio_metrics
                    if m in s and m in ref and ref[m]["median"]
                }
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=256, help="PubMedQA training rows (stratified, official split)")
    p.add_argument("--eval-rows", type=int, default=32, help="validation rows")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--max-steps", type=int, default=None, help="cap the optimizer steps (default: one full epoch)")
    p.add_argument("--batch-size", type=int, default=8, help="effective batch size (one micro-batch)")
    p.add_argument("--max-length", type=int, default=512)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument(
        "--warmup-steps",
        type=int,
        default=0,
        help="steady state: also report tokens/s and FLOP/s of the steps after this many (e.g. 2, --max-steps 22)",
    )
    p.add_argument(
        "--trl-steps",
        type=int,
        default=None,
        help="cap TRL at its full defaults (bf16: emulated on some CPUs) at this many steps; others keep --max-steps",
    )
    p.add_argument(
        "--trl-repeats",
        type=int,
        default=None,
        help="run TRL at its full defaults in the first N repeats only (it is reported beside, per step)",
    )
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument(
        "--contenders",
        default=",".join(ALL),
        help=f"comma-separated, from {', '.join(ALL + OPTIONAL)} (trl_fp32 = TRL with bf16=False; default "
        f"{','.join(ALL)})",
    )
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    p.add_argument("--out", default=str(HERE / "results"))
    p.add_argument("--contender", help=argparse.SUPPRESS)  # worker mode
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--result", help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.contender:
        import _train_contenders

        return _train_contenders.worker(args.contender, json.loads(args.config), Path(args.result), T_START)

    contenders = [c.strip() for c in args.contenders.split(",") if c.strip()]
    unknown = [c for c in contenders if c not in ALL + OPTIONAL]
    if unknown:
        p.error(f"--contenders: unknown {unknown}; choose from {', '.join(ALL + OPTIONAL)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            p.error("--device cuda: torch cannot see a CUDA device on this machine")

    from _train_contenders import common_eval
    from _train_report import render

    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
    from ftkit.files import write_json, write_text

    t_bench = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="ftkit-train-throughput-"))
    data = prepare_pubmedqa(
        work / "data",
        source=args.source if Path(args.source).is_file() else None,
        max_train=args.rows,
        max_validation=args.eval_rows,
        max_test=2,
    )
    cfg = {
        "data": str(data.out),
        "lr": args.lr,
        "batch_size": args.batch_size,
        "max_length": args.max_length,
        "max_steps": args.max_steps,
        "device": args.device,
        "warmup_steps": args.warmup_steps,
        "max_steps_by": {"trl": args.trl_steps} if args.trl_steps else {},
    }
    info = machine()
    print(f"work folder {work}; machine {info['cpu']}, {info['torch_threads']} torch threads", flush=True)
    peaks = measure_peaks(args.device)
    print(f"matmul peaks (GFLOP/s): {peaks}", flush=True)
    base_eval = common_eval(None, data.out, args.max_length, args.device)["eval_loss"]

    runs = []
    for r in range(args.repeats):
        for name in contenders:  # alternated, so drift in machine load hits every contender alike
            if name == "trl" and args.trl_repeats is not None and r >= args.trl_repeats:
                continue
            runs.append(run_worker_process(name, cfg, work, r))

    summary = summarize(runs, contenders, peaks)
    trl_defaults = next((r["trl_defaults"] for r in runs if r.get("trl_defaults")), None)
    n_train = sum(data.counts["train"].values())
    date = time.strftime("%Y-%m-%d")
    result = {
        "date": date,
        "machine": info,
        "settings": {k: v for k, v in vars(args).items() if k not in ("contender", "config", "result")},
        "data": {
            "train_rows": n_train,
            "validation_rows": sum(data.counts["validation"].values()),
            "folder": str(data.out),
        },
        "peaks": peaks,
        "base_model_eval_loss": base_eval,
        "trl_defaults": trl_defaults,
        "summary": summary,
        "runs": runs,
        "benchmark_s": time.perf_counter() - t_bench,
    }
    out = Path(args.out)
    write_json(out / f"train_throughput-{date}.json", result)
    md = render(result)
    write_text(out / f"train_throughput-{date}.md", md)
    print(md)
    print(f"benchmark took {result['benchmark_s']:.0f} s; results in {out}", flush=True)
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
