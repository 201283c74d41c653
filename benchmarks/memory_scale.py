"""The estimate's memory formula for a catalog 14B model under DDP, FSDP and QLoRA, without downloading it.

Writes Qwen2.5-14B-Instruct's published shape (its config.json: hidden 5120, 48 layers, 40 heads, 8 KV heads,
intermediate 13824, vocab 152064, untied output head) to a temporary folder, builds it on torch's meta device with
ftkit's LoRA exactly as ``ftkit estimate`` does (``ftkit.train.memory.model_shape``), and prints the formula's
GiB per process (``ftkit.train.memory.memory_formula``) for bf16 training on a GPU:

    python benchmarks/memory_scale.py                 # LoRA r 8 on every linear layer, micro-batch 1 x 2048 tokens
    python benchmarks/memory_scale.py --seq 4096 --micro 2

The formula is a documented upper-bound estimate, not a measurement (benchmarks/gpu_checks.py measures on a GPU).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

QWEN25_14B = {
    "architectures": ["Qwen2ForCausalLM"],
    "model_type": "qwen2",
    "hidden_size": 5120,
    "intermediate_size": 13824,
    "num_hidden_layers": 48,
    "num_attention_heads": 40,
    "num_key_value_heads": 8,
    "vocab_size": 152064,
    "max_position_embeddings": 32768,
    "tie_word_embeddings": False,
    "torch_dtype": "bfloat16",
}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--micro", type=int, default=1)
    p.add_argument("--r", type=int, default=8)
    args = p.parse_args()

    from ftkit.job.spec import LoraSpec
    from ftkit.models.catalog import resolve_model
    from ftkit.train.memory import GIB, memory_formula, model_shape

    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "config.json").write_text(json.dumps(QWEN25_14B))
        shape = model_shape(resolve_model(tmp), LoraSpec(r=args.r, alpha=args.r))
    print(
        f"Qwen2.5-14B shape: {shape['parameters'] / 1e9:.2f}B parameters, {shape['trainable'] / 1e6:.1f}M LoRA "
        f"(r {args.r}), {shape['quantizable'] / 1e9:.2f}B in quantisable linear layers; "
        f"micro-batch {args.micro} x {args.seq} tokens, bf16"
    )
    print("| setting | weights | gradients + AdamW | activations + logits | total per process (GiB) |")
    print("|---|---|---|---|---|")
    rows = [("LoRA, 1 process or DDP", 1, "none")]
    rows += [(f"LoRA, fsdp over {n}", n, "none") for n in (2, 4, 8)]
    rows += [("QLoRA 4bit, 1 process", 1, "4bit"), ("QLoRA 8bit, 1 process", 1, "8bit")]
    for label, shards, quant in rows:
        m = memory_formula(shape, "bf16", "bf16", args.micro, args.seq, "cpu", shards=shards, quantization=quant)
        print(
            f"| {label} | {m.weights / GIB:.1f} | {(m.gradients + m.optimizer) / GIB:.2f} | "
            f"{(m.activations + m.logits) / GIB:.1f} | {m.total / GIB:.1f} |"
        )


if __name__ == "__main__":
    main()
