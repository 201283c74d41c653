"""Where and in what precision ftkit runs: the device, and the one precision rule for training and inference.

Training: bf16 on GPUs that support it (else fp16 with loss scaling), fp32 on Apple MPS, and on a CPU bf16 only
where the CPU has native bf16 and a matmul benchmark shows it faster. Frozen weights load in the training
precision, but full fine-tuning keeps fp32 master weights. Inference: bf16 (else fp16) on CUDA, fp32 elsewhere.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass

from ftkit.errors import FtkitError, UsageError
from ftkit.files import write_json
from ftkit.paths import cache_dir


class DeviceMissing(FtkitError, RuntimeError):
    """A device was asked for that this machine does not have."""


@dataclass
class Precision:
    """What the engine runs in: ``name`` for the Trainer's mixed precision, with the reason it was chosen."""

    name: str  # "fp32" | "bf16" | "fp16"
    reason: str

    @property
    def trainer_flags(self) -> dict:
        return {"bf16": self.name == "bf16", "fp16": self.name == "fp16"}

    def load_dtype(self, lora: bool) -> str:
        """The dtype the weights are loaded in: the training precision for LoRA (the base stays frozen), fp32
        for full fine-tuning (the optimizer updates fp32 master weights)."""
        return self.name if lora else "fp32"


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
        raise UsageError(f"device {requested!r} is not one of auto, cuda, mps, cpu")
    if not has[requested]:
        raise DeviceMissing(f"device {requested!r} was asked for but torch cannot see one on this machine")
    return requested


def cpu_supports_bf16() -> bool:
    """True when the CPU has native bf16 dot products (AVX512-BF16 or AMX); elsewhere bf16 is emulated and slow."""
    try:
        flags = open("/proc/cpuinfo").read()
    except OSError:
        return platform.machine() == "arm64"  # Apple silicon runs bf16 natively
    return " avx512_bf16" in flags or " amx_bf16" in flags


def cpu_name() -> str:
    """The CPU's model name (for benchmark records and the bf16 probe's cache key)."""
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

    key = f"{cpu_name()}|torch {torch.__version__}|threads {torch.get_num_threads()}"
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
            raise UsageError("precision fp16 is not supported for training on CPU; use bf16 or fp32")
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


def inference_dtype(device: str) -> str:
    """bf16 (else fp16) on CUDA; fp32 on CPUs (bf16 is emulated and many times slower without native support) and
    on MPS (most reliable there)."""
    import torch

    if device == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"
