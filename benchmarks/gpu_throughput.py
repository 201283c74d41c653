"""GPU training throughput at an 8B Llama shape with random weights: tokens/s, peak memory, MFU.

Builds a Llama model with Llama-3-8B's shape (hidden 4096, 32 layers, 32 heads, 8 KV heads, intermediate
14336, vocab 128256) on the "meta" device, materialises it on the GPU in bf16 with a cheap random init (no
download), wraps it with ftkit's LoRA (``ftkit.models.loading.apply_lora``: r 8, alpha 16, every linear layer)
and runs optimizer steps the way ftkit's engine does: bf16 autocast, fused AdamW, gradient clipping at 1.0,
batches of random token rows of realistic lengths packed by ``ftkit.data.encoding.padding_free_collator`` (or
padded, with --batching padded). Reports tokens/s, ``torch.cuda.max_memory_allocated`` and MFU against the
GPU's bf16 dense peak (looked up by device name, or --peak-tflops) and against a bf16 matmul measured in the
same run.

    python benchmarks/gpu_throughput.py                        # 8B shape, batch 8, 20 timed steps
    python benchmarks/gpu_throughput.py --layers 8 --steps 10  # a smaller GPU
    python benchmarks/gpu_throughput.py --compare              # with and without each fast-path piece

``--compare`` runs the configurations of :data:`COMPARE` one after the other, each in a fresh process (SDPA with
padding; FlashAttention-2 with padding; FlashAttention-2 with padding-free packing; that plus Liger's kernels), and
writes one table; a configuration whose package is missing is reported as skipped. Model FLOPs come from
``ftkit.train.flops.training_flops`` (the count ``ftkit estimate`` and the CPU benchmarks use).

Without CUDA it exits with code 2. ``--device cpu`` with tiny shape options only checks the script itself.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

# bf16 dense tensor-core peaks (TFLOP/s, no sparsity) from NVIDIA's data sheets; the first matching name wins,
# so more specific names come first.
PEAK_TFLOPS = (
    ("GH200", 989.0),
    ("H200", 989.0),
    ("H100 PCIe", 756.0),
    ("H100 NVL", 835.0),
    ("H100", 989.0),  # SXM
    ("B200", 2250.0),
    ("A100", 312.0),
    ("L40S", 362.0),
    ("L40", 181.0),
    ("L4", 121.0),
    ("A10", 125.0),
    ("RTX 4090", 165.0),
)


# --compare: (label, arguments); each runs in its own process so that no memory or kernel choice carries over
COMPARE = (
    ("SDPA, padded", ["--attn", "sdpa", "--batching", "padded", "--liger", "off"]),
    ("FlashAttention-2, padded", ["--attn", "flash_attention_2", "--batching", "padded", "--liger", "off"]),
    ("FlashAttention-2, padding-free", ["--attn", "flash_attention_2", "--batching", "padding_free", "--liger", "off"]),
    ("FlashAttention-2, padding-free, Liger", ["--attn", "flash_attention_2", "--batching", "padding_free"]),
)


def peak_for(name: str) -> float | None:
    """The bf16 dense peak of a GPU by its torch device name, or None when it is not in the table."""
    for key, tflops in PEAK_TFLOPS:
        if key.lower() in name.lower():
            return tflops
    return None


def build_model(args, device: str):
    """Random-weight Llama on ``device`` in bf16: built on "meta" (no memory), materialised, initialised."""
    import torch
    from transformers import AutoModelForCausalLM, LlamaConfig
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding

    cfg = LlamaConfig(
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.kv_heads,
        intermediate_size=args.intermediate,
        vocab_size=args.vocab,
        max_position_embeddings=8192,
        rope_theta=500000.0,
        tie_word_embeddings=False,
        use_cache=False,
    )
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16, attn_implementation=args.attn)
    model.to_empty(device=device)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name:
                p.fill_(1.0)
            else:
                p.normal_(0.0, cfg.initializer_range)
    # the rotary inverse frequencies are a computed buffer that to_empty left uninitialised
    with torch.device(device):
        model.model.rotary_emb = LlamaRotaryEmbedding(config=cfg)
    return model


def make_rows(n: int, lengths: tuple[int, int], vocab: int, prompt_share: float, rng: random.Random):
    """Random token rows; the first ``prompt_share`` of each is labelled -100 (the prompt, masked)."""
    rows = []
    for _ in range(n):
        length = rng.randint(*lengths)
        ids = [rng.randrange(1, vocab) for _ in range(length)]
        k = int(length * prompt_share)
        rows.append({"input_ids": ids, "labels": [-100] * k + ids[k:]})
    return rows


def padded_batch(rows: list[dict]) -> dict:
    import torch

    n = max(len(r["input_ids"]) for r in rows)
    ids = torch.zeros(len(rows), n, dtype=torch.long)
    labels = torch.full((len(rows), n), -100, dtype=torch.long)
    mask = torch.zeros(len(rows), n, dtype=torch.long)
    for i, r in enumerate(rows):
        k = len(r["input_ids"])
        ids[i, :k], labels[i, :k], mask[i, :k] = torch.tensor(r["input_ids"]), torch.tensor(r["labels"]), 1
    return {"input_ids": ids, "labels": labels, "attention_mask": mask}


def matmul_tflops(device: str, size: int = 8192, reps: int = 10) -> float:
    """Best bf16 TFLOP/s of a size^3 matmul on this device."""
    import torch

    a = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    b = torch.randn(size, size, dtype=torch.bfloat16, device=device)
    best = float("inf")
    for i in range(reps + 2):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        a @ b
        if device == "cuda":
            torch.cuda.synchronize()
        if i >= 2:  # the first runs choose kernels
            best = min(best, time.perf_counter() - t)
    del a, b
    return 2 * size**3 / best / 1e12


def _passed_on(args) -> list[str]:
    """The shape and schedule options of this run, to pass to each configuration's process."""
    skip = {"compare", "attn", "batching", "liger", "out"}
    out = []
    for k, v in vars(args).items():
        if k not in skip and v is not None:
            out += [f"--{k.replace('_', '-')}", str(v)]
    return out


def compare(args) -> int:
    """Each configuration of COMPARE in its own process; one table of the results (a missing package: skipped)."""
    import importlib.util
    import json
    import subprocess
    import tempfile

    from ftkit.files import write_json, write_text

    rows, date = [], time.strftime("%Y-%m-%d")
    for label, extra in COMPARE:
        missing = [
            pkg
            for pkg, needed in (("flash_attn", "flash_attention_2" in extra), ("liger_kernel", "off" not in extra))
            if needed and importlib.util.find_spec(pkg) is None
        ]
        if missing:
            rows.append({"label": label, "skipped": f"{', '.join(missing)} not installed"})
            continue
        with tempfile.TemporaryDirectory() as tmp:
            cmd = [sys.executable, __file__, *_passed_on(args), *extra, "--out", tmp]
            done = subprocess.run(cmd, capture_output=True, text=True)
            found = sorted(Path(tmp).glob("gpu_throughput-*.json"))
            if done.returncode != 0 or not found:
                rows.append({"label": label, "skipped": f"failed: {done.stderr.strip().splitlines()[-1:]}"})
                continue
            rows.append({"label": label, **json.loads(found[0].read_text())})
    out = Path(args.out)
    write_json(out / f"gpu_throughput-compare-{date}.json", rows)
    base = next((r["tokens_per_s"] for r in rows if "tokens_per_s" in r), None)
    lines = [
        f"# GPU fast path, with and without each piece, {date}",
        "",
        "| configuration | tokens/s | vs first | peak memory | model TFLOP/s | MFU (data sheet) | final loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "skipped" in r:
            lines.append(f"| {r['label']} | skipped: {r['skipped']} | | | | | |")
            continue
        mem = r["peak_memory_allocated_mb"]
        mfu = f"{r['mfu_spec']:.1%}" if r["mfu_spec"] is not None else "n/a"
        lines.append(
            f"| {r['label']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base:.2f}x | "
            f"{mem / 1024:.1f} GiB | {r['model_tflops']:.1f} | {mfu} | {r['final_loss']:.4f} |"
            if mem is not None
            else f"| {r['label']} | {r['tokens_per_s']:.0f} | {r['tokens_per_s'] / base:.2f}x | n/a | "
            f"{r['model_tflops']:.3f} | {mfu} | {r['final_loss']:.4f} |"
        )
    first = next((r for r in rows if "gpu" in r), {})
    lines += [
        "",
        f"GPU: {first.get('gpu') or first.get('device')}; command: `python benchmarks/gpu_throughput.py "
        f"--compare {' '.join(_passed_on(args))}`",
    ]
    md = "\n".join(lines) + "\n"
    write_text(out / f"gpu_throughput-compare-{date}.md", md)
    print(md)
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20, help="timed optimizer steps")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first (allocation, kernel choice)")
    p.add_argument("--batch-size", type=int, default=8, help="rows per optimizer step (one micro-batch)")
    p.add_argument("--min-len", type=int, default=256)
    p.add_argument("--max-len", type=int, default=768, help="row lengths are uniform in [min-len, max-len]")
    p.add_argument("--batching", choices=("padding_free", "padded"), default="padding_free")
    p.add_argument(
        "--attn",
        default=None,
        help="attention implementation (default: flash_attention_2 if the flash_attn package is installed, else sdpa)",
    )
    p.add_argument(
        "--liger",
        choices=("auto", "off"),
        default="auto",
        help="Liger's RMSNorm/RoPE/SwiGLU kernels where liger-kernel is installed (ftkit.models.kernels), or off",
    )
    p.add_argument("--compare", action="store_true", help="run every configuration of COMPARE; one table")
    p.add_argument("--lora-r", type=int, default=8)
    p.add_argument("--lora-alpha", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--peak-tflops", type=float, default=None, help="the GPU's bf16 dense peak (default: by name)")
    p.add_argument("--device", default="cuda", help="cuda; cpu only checks the script with a tiny shape")
    p.add_argument("--hidden", type=int, default=4096)
    p.add_argument("--layers", type=int, default=32)
    p.add_argument("--heads", type=int, default=32)
    p.add_argument("--kv-heads", type=int, default=8)
    p.add_argument("--intermediate", type=int, default=14336)
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()

    import torch

    if args.device == "cuda" and not torch.cuda.is_available():
        print(
            "gpu_throughput.py needs a CUDA GPU, and torch cannot see one on this machine "
            f"(torch {torch.__version__}, CUDA build: {torch.version.cuda or 'no'}). Run it on a GPU "
            "machine, or use "
            "benchmarks/train_throughput.py for CPU training throughput.",
            file=sys.stderr,
        )
        return 2
    if args.attn is None:
        import importlib.util

        args.attn = "flash_attention_2" if importlib.util.find_spec("flash_attn") else "sdpa"

    if args.compare:
        return compare(args)

    from ftkit.data.encoding import padding_free_collator
    from ftkit.files import write_json, write_text
    from ftkit.models.kernels import apply_liger
    from ftkit.models.loading import apply_lora, count_parameters
    from ftkit.train.flops import Shape, training_flops
    from ftkit.train.plan import auto_batching
    from ftkit.train.trainer import target_positions_forward

    dev = args.device
    torch.manual_seed(args.seed)
    gpu = torch.cuda.get_device_name(0) if dev == "cuda" else None
    peak = args.peak_tflops or (peak_for(gpu) if gpu else None)
    measured_peak = matmul_tflops(dev) if dev == "cuda" else None

    t = time.perf_counter()
    model = build_model(args, dev)
    ftkit_would_batch = auto_batching(model)
    liger = apply_liger(model, dev) if args.liger == "auto" else []
    model = apply_lora(model, args.lora_r, args.lora_alpha, 0.0, None)
    init_s = time.perf_counter() - t
    trainable, total = count_parameters(model)
    embed = model.get_input_embeddings().weight.numel()
    matmul_params = total - trainable - embed  # the embedding is a lookup; the LM head is a matmul and counts
    weights_mb = torch.cuda.memory_allocated() / 2**20 if dev == "cuda" else None

    params = [q for q in model.parameters() if q.requires_grad]
    opt = torch.optim.AdamW(params, lr=args.lr, fused=True)
    rng = random.Random(args.seed)
    collate = padding_free_collator() if args.batching == "padding_free" else padded_batch
    step_s, tokens, trained, losses, flops = [], [], [], [], []
    shape = Shape.from_config(model.config)
    model.train()
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    for step in range(args.warmup + args.steps):
        rows = make_rows(args.batch_size, (args.min_len, args.max_len), args.vocab, 0.85, rng)
        batch = {k: v.to(dev) for k, v in collate(rows).items()}
        if dev == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        with torch.autocast(device_type=dev, dtype=torch.bfloat16):
            loss = target_positions_forward(model, batch)[0].mean()  # the engine's loss: LM head on targets only
        loss.backward()
        loss = loss.detach()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if dev == "cuda":
            torch.cuda.synchronize()
        if step >= args.warmup:
            step_s.append(time.perf_counter() - t)
            tokens.append(sum(len(r["input_ids"]) for r in rows))
            trained.append(sum(1 for r in rows for x in r["labels"][1:] if x != -100))
            flops.append(training_flops(shape, [len(r["input_ids"]) for r in rows], trained[-1], args.lora_r).total)
            losses.append(float(loss))
        print(
            f"step {step + 1}/{args.warmup + args.steps}: {time.perf_counter() - t:.3f} s, loss {float(loss):.3f}",
            flush=True,
        )

    secs = sum(step_s)
    tok_s = sum(tokens) / secs
    achieved = sum(flops) / secs / 1e12
    date = time.strftime("%Y-%m-%d")
    result = {
        "date": date,
        "gpu": gpu,
        "device": dev,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "settings": vars(args),
        "attn_implementation": args.attn,
        "liger_kernels": liger,
        "ftkit_auto_batching_for_this_attention": ftkit_would_batch,
        "parameters": {"total": total, "trainable": trainable, "matmul": matmul_params},
        "init_s": init_s,
        "weights_mb": weights_mb,
        "timed_steps": len(step_s),
        "step_s": {"median": statistics.median(step_s), "min": min(step_s), "max": max(step_s)},
        "tokens_per_step_mean": statistics.mean(tokens),
        "tokens_per_s": tok_s,
        "trained_tokens_per_s": sum(trained) / secs,
        "peak_memory_allocated_mb": torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None,
        "model_tflops": achieved,
        "peak_tflops_spec": peak,
        "peak_tflops_measured_bf16_matmul_8192": measured_peak,
        "mfu_spec": achieved / peak if peak else None,
        "mfu_measured": achieved / measured_peak if measured_peak else None,
        "final_loss": losses[-1],
    }
    out = Path(args.out)
    write_json(out / f"gpu_throughput-{date}.json", result)

    def pct(x, tflops):
        return f"{x:.1%} ({tflops:.0f} TFLOP/s)" if x is not None else "n/a"

    lines = [
        f"# GPU training throughput, {date}",
        "",
        f"{gpu or dev}, torch {torch.__version__} (CUDA {torch.version.cuda}). Llama shape: hidden "
        f"{args.hidden}, "
        f"{args.layers} layers, {args.heads} heads, {args.kv_heads} KV heads, intermediate "
        f"{args.intermediate}, "
        f"vocab {args.vocab}; {total / 1e9:.2f} B parameters, random bf16 weights. LoRA r {args.lora_r} / "
        "alpha "
        f"{args.lora_alpha} on every linear layer ({trainable / 1e6:.1f} M trainable), bf16 autocast, "
        "fused AdamW, "
        f"clip 1.0, attention {args.attn}, batching {args.batching} (ftkit's auto batching would pick "
        f"{ftkit_would_batch} with this attention). Batch {args.batch_size} random rows of {args.min_len}-"
        f"{args.max_len} tokens (mean {statistics.mean(tokens):.0f} tokens per step), {len(step_s)} timed "
        "steps "
        f"after {args.warmup} warm-up steps.",
        "",
        "| tokens/s | trained tokens/s | step s (median) | peak memory allocated | model TFLOP/s | MFU "
        "(data-sheet peak)"
        " | MFU (measured bf16 matmul) |",
        "|---|---|---|---|---|---|---|",
        f"| {tok_s:.0f} | {result['trained_tokens_per_s']:.0f} | {result['step_s']['median']:.3f} | "
        + (f"{result['peak_memory_allocated_mb'] / 1024:.1f} GiB" if dev == "cuda" else "n/a")
        + f" | {achieved:.1f} | {pct(result['mfu_spec'], peak)} | "
        f"{pct(result['mfu_measured'], measured_peak)} |",
        "",
        f"Liger kernels: {', '.join(liger) or 'none'}. Model TFLOP/s: ftkit.train.flops.training_flops of each "
        "step's rows (decoder matmuls, causal attention, the LM head on target positions, LoRA) / seconds.",
    ]
    md = "\n".join(lines) + "\n"
    write_text(out / f"gpu_throughput-{date}.md", md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
