"""Model loading for training and inference: device, precision, pad token, LoRA.

Every model reference (catalog UUID or name, Hugging Face repo id, local folder, the bundled model) goes through
:func:`ftkit.catalog.resolve_model` and then one ``from_pretrained`` call, so they all behave the same.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass

from .paths import cache_dir

ALL_LINEAR = "all-linear"


@dataclass
class Precision:
    """What the engine runs in: ``dtype`` for the frozen weights, ``autocast`` for mixed precision."""

    name: str  # "fp32" | "bf16" | "fp16"
    reason: str

    @property
    def trainer_flags(self) -> dict:
        return {"bf16": self.name == "bf16", "fp16": self.name == "fp16"}


def pick_device(requested: str = "auto") -> str:
    """``auto`` picks CUDA, then Apple MPS, then CPU. An explicit device that is missing is an error."""
    import torch

    has = {
        "cuda": torch.cuda.is_available(),
        "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available(),
        "cpu": True,
    }
    if requested == "auto":
        return next(d for d in ("cuda", "mps", "cpu") if has[d])
    if requested not in has:
        raise ValueError(f"device {requested!r} is not one of auto, cuda, mps, cpu")
    if not has[requested]:
        raise RuntimeError(f"device {requested!r} was asked for but torch cannot see one on this machine")
    return requested


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return platform.machine() == "arm64"  # Apple silicon runs bf16 natively
    return " avx512_bf16" in flags or " amx_bf16" in flags


def _cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_bf16_speedup(size: int = 1024, repeats: int = 5) -> float:
    """Measured bf16/fp32 matmul throughput ratio on this CPU, cached per CPU model and torch version."""
    import torch

    key = f"{_cpu_name()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
    path = cache_dir() / "cpu_bf16_speedup.json"
    try:
        cached = json.loads(path.read_text())
        if key in cached:
            return float(cached[key])
    except (OSError, ValueError):
        cached = {}

    def best(dtype):
        a = torch.randn(size, size, dtype=dtype)
        b = torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up: first call allocates and picks kernels
        t = []
        for _ in range(repeats):
            s = time.perf_counter()
            a @ b
            t.append(time.perf_counter() - s)
        return min(t)

    ratio = best(torch.float32) / best(torch.bfloat16)
    from ._io import write_json

    cached[key] = round(ratio, 3)
    try:
        write_json(path, cached)
    except OSError:
        pass
    return ratio


def pick_precision(device: str, requested: str = "auto") -> Precision:
    """bf16 on GPUs that support it, else fp16 with loss scaling; on CPU bf16 only where it is measured faster."""
    import torch

    if requested != "auto":
        if requested == "fp16" and device == "cpu":
            raise ValueError("precision fp16 is not supported for training on CPU; use bf16 or fp32")
        return Precision(requested, "asked for in local.precision")
    if device == "cuda":
        if torch.cuda.is_bf16_supported():
            return Precision("bf16", "CUDA device supports bf16")
        return Precision("fp16", "CUDA device without bf16: fp16 with loss scaling")
    if device == "mps":
        return Precision("fp32", "Apple MPS: fp32 (mixed precision training on MPS is not reliable)")
    if not cpu_supports_bf16():
        return Precision("fp32", "CPU has no native bf16 instructions")
    speedup = cpu_bf16_speedup()
    if speedup > 1.15:
        return Precision("bf16", f"CPU bf16 matmul measured {speedup:.2f}x faster than fp32")
    return Precision("fp32", f"CPU bf16 matmul measured only {speedup:.2f}x fp32")


def ensure_pad_token(tokenizer, model=None) -> str:
    """Give the tokenizer a pad token distinct from EOS, so the EOS that ends each answer is never masked.

    Returns a sentence for the job log saying what was done.
    """
    eos = tokenizer.eos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token != eos:
        return f"pad token {tokenizer.pad_token!r} (distinct from EOS {eos!r})"
    vocab = tokenizer.get_vocab()
    for cand in (tokenizer.unk_token, "<|finetune_right_pad_id|>", "<|endoftext|>", "<pad>", "<|pad|>"):
        if cand and cand != eos and cand in vocab:
            tokenizer.pad_token = cand
            msg = f"pad token set to existing {cand!r} (was {'EOS' if eos else 'unset'})"
            break
    else:
        tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        if model is not None:
            model.resize_token_embeddings(len(tokenizer))
        msg = "pad token <|pad|> added to the vocabulary"
    if model is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
        if getattr(model, "generation_config", None) is not None:
            model.generation_config.pad_token_id = tokenizer.pad_token_id
    return msg


def load_tokenizer(model_ref: str, trust_remote_code: bool = False):
    from transformers import AutoTokenizer

    from .catalog import resolve_model

    info = resolve_model(model_ref)
    tok = AutoTokenizer.from_pretrained(info.source, trust_remote_code=trust_remote_code)
    ensure_pad_token(tok)
    if tok.chat_template is None:
        raise ValueError(
            f"model {model_ref!r} has no chat template; ftkit formats rows with the model's chat template "
            "(use an instruct/chat model or a tokenizer that defines one)"
        )
    return tok


def load_model(
    model_ref: str,
    device: str = "cpu",
    dtype: str = "fp32",
    trust_remote_code: bool = False,
):
    """Load a causal LM and its tokenizer from any model reference; returns ``(model, tokenizer, info)``."""
    import torch
    from transformers import AutoModelForCausalLM

    from .catalog import resolve_model

    info = resolve_model(model_ref)
    tokenizer = load_tokenizer(model_ref, trust_remote_code=trust_remote_code)
    torch_dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype]
    model = AutoModelForCausalLM.from_pretrained(
        info.source, dtype=torch_dtype, trust_remote_code=trust_remote_code
    )
    ensure_pad_token(tokenizer, model)
    model.to(device)
    return model, tokenizer, info


def apply_lora(model, r: int, alpha: int, dropout: float, modules: list[str] | None):
    """Wrap ``model`` with peft LoRA adapters; an empty module list means every linear layer ("all-linear")."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(modules) if modules else ALL_LINEAR,
        task_type="CAUSAL_LM",
        bias="none",
    )
    return get_peft_model(model, cfg)


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    return trainable, total
