"""Optional GPU kernels, used where they are installed and only on CUDA: FlashAttention-2 (the ``flash_attn``
package) for attention, and Liger's Triton kernels (the ``liger-kernel`` package, ``pip install "ftkit[gpu]"``) for
RMSNorm, RoPE and SwiGLU. On a CPU, or in fp32, nothing here changes the model, so CPU runs are untouched.

FlashAttention-2 runs packed rows through its variable-length kernels, so with it the engine's ``local.batching:
auto`` packs micro-batches without padding (:func:`ftkit.train.plan.auto_batching`). Liger's fused linear +
cross-entropy is not used: ftkit computes the LM head on target positions only and its own loss
(:class:`ftkit.train.trainer.CountingTrainer`), which already avoids most of the logits that kernel saves.
``FTKIT_KERNELS=off`` turns both off (a with/without comparison, or to rule them out when something looks wrong).
"""

from __future__ import annotations

import importlib.util
import os

LIGER_KERNELS = ("rope", "rms_norm", "swiglu")


def _installed(package: str) -> bool:
    return importlib.util.find_spec(package) is not None


def _wanted(device: str) -> bool:
    return str(device).startswith("cuda") and os.environ.get("FTKIT_KERNELS", "").lower() not in ("off", "0", "no")


def attention_implementation(device: str, dtype: str) -> str | None:
    """``flash_attention_2`` for a 16-bit model on CUDA with flash_attn installed; else None (transformers'
    default, SDPA)."""
    if _wanted(device) and dtype in ("bf16", "fp16") and _installed("flash_attn"):
        return "flash_attention_2"
    return None


def apply_liger(model, device: str) -> list[str]:
    """Swap in Liger's RMSNorm, RoPE and SwiGLU kernels on a CUDA model when liger-kernel is installed (before the
    LoRA adapters are added: the adapted linear layers stay peft's). Returns the kernels applied, [] for none."""
    if not (_wanted(device) and _installed("liger_kernel")):
        return []
    from liger_kernel.transformers import _apply_liger_kernel_to_instance

    flags = dict.fromkeys(LIGER_KERNELS, True)
    # a model type Liger does not know is left as it was (Liger logs a warning)
    _apply_liger_kernel_to_instance(model=model, cross_entropy=False, fused_linear_cross_entropy=False, **flags)
    return list(LIGER_KERNELS) if _has_liger_modules(model) else []


def _has_liger_modules(model) -> bool:
    """Whether Liger patched the model: it binds its kernels' ``forward`` onto the model's own modules (applied to
    an instance) or swaps in its own classes, so both are looked for."""
    for m in model.modules():
        bound = m.__dict__.get("forward")
        where = getattr(getattr(bound, "__func__", bound), "__module__", None) or type(m).__module__
        if where.startswith("liger_kernel"):
            return True
    return False


def kernels_note(model) -> str | None:
    """The job log's line on the kernels of this module in use, or None when neither is (CPU runs, and GPUs
    without the packages)."""
    attn = getattr(model.config, "_attn_implementation", None) or ""
    used = (["FlashAttention-2 attention"] if "flash" in attn else []) + (
        ["Liger RMSNorm, RoPE and SwiGLU"] if _has_liger_modules(model) else []
    )
    return "kernels: " + "; ".join(used) if used else None
