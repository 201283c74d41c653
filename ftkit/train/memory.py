"""Memory a job needs, by a documented rough formula from the model's config alone (no weights are read), against
what the device has free; and the measured peak while steps are timed."""

from __future__ import annotations

import threading
import warnings
from dataclasses import dataclass

from ftkit.models.loading import apply_lora, count_parameters, freeze_all_but_last_layers, hub_options

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
QUANT_BITS = {"4bit": 4, "8bit": 8}
GIB = 1024**3


@dataclass
class Memory:
    """Memory the training run needs, by a rough formula (bytes), and what the device has."""

    parameters: int
    """All parameters (base model plus LoRA adapters)."""
    trainable: int
    load_dtype: str
    """The dtype the frozen weights are loaded in (the engine's choice)."""
    weights: int
    """Frozen parameters x bytes of load_dtype + trainable parameters x 4 (adapters and full fine-tuning
    keep fp32 weights). Quantised (local.quantization): the frozen linear weights of the decoder layers at 4 or 8
    bits (block scales left out), the other frozen weights x 4 (peft's k-bit preparation keeps them in fp32).
    Divided by ``shards`` under FSDP."""
    gradients: int
    """Trainable parameters x 4 bytes (fp32), divided by ``shards``."""
    optimizer: int
    """AdamW's two fp32 moments: trainable parameters x 8 bytes, divided by ``shards``."""
    activations: int
    """Korthikanti et al. (2022), eq. 1 without parallelism or recomputation: per layer
    seq x micro_batch x hidden x (34 + 5 x heads x seq / hidden) bytes for 16-bit activations, doubled for
    fp32. It keeps the attention-score term, so it errs high where attention kernels do not store scores."""
    logits: int
    """micro_batch x seq x vocab x 4 bytes x 2 (fp32 logits for the loss, and their gradient): an upper bound, as
    the engine projects only positions with a target (every position only when mask_prompt_labels is off)."""
    micro_batch: int
    seq: int
    """The longest row (tokens) the formula assumes: the longest encoded row, or max_seq_length."""
    device: str
    available: int | None
    """Free memory on the device now: torch.cuda.mem_get_info on CUDA, psutil's available RAM otherwise."""
    shards: int = 1
    """Processes the weights, gradients and optimizer state are sharded over (FSDP); 1 = a whole copy per process
    (one process, or DDP). Activations and logits are per process either way."""
    quantization: str = "none"
    """local.quantization: none, 4bit or 8bit."""
    measured_peak: int | None = None
    """Measured while timing steps: CUDA max_memory_allocated, or on CPU the growth of the process's
    resident memory (sampled every 10 ms) from before the model was loaded."""
    warning: str | None = None

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits


def model_shape(info, lora, trust_remote_code: bool = False, last_layers: int | None = None) -> dict:
    """Layers, hidden size, heads, vocabulary and parameter counts, from ``config.json`` alone: the model is
    built on torch's meta device (no weights are read or downloaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(info.source, trust_remote_code=trust_remote_code, **hub_options(info))
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks a deprecated transformers property
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
        if lora.enabled:
            model = apply_lora(model, lora.r, lora.alpha, lora.dropout, lora.trainable_modules, last_layers)
        else:
            freeze_all_but_last_layers(model, last_layers)
    trainable, total = count_parameters(model)
    text = getattr(cfg, "text_config", None) or cfg
    # what bitsandbytes quantises: the frozen linear layers, not the output head (nor the LoRA layers)
    quantizable = sum(
        m.weight.numel()
        for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and "lm_head" not in name and not m.weight.requires_grad
    )
    return {
        "layers": text.num_hidden_layers,
        "hidden": text.hidden_size,
        "heads": text.num_attention_heads,
        "vocab": text.vocab_size,
        "parameters": total,
        "trainable": trainable,
        "quantizable": quantizable,
    }


def available_memory(device: str) -> int | None:
    import psutil

    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    return int(psutil.virtual_memory().available)


def memory_formula(
    shape: dict,
    load_dtype: str,
    precision: str,
    micro: int,
    seq: int,
    device: str,
    shards: int = 1,
    quantization: str = "none",
) -> Memory:
    """The documented rough formula of :class:`Memory` for one process, and a warning when it exceeds the free
    memory. ``shards``: processes FSDP shards the model over (1: none); ``quantization``: none, 4bit or 8bit."""
    trainable, total = shape["trainable"], shape["parameters"]
    frozen = total - trainable
    if quantization == "none":
        weights = frozen * DTYPE_BYTES[load_dtype] + trainable * 4
    else:
        bits = QUANT_BITS[quantization]
        weights = shape["quantizable"] * bits // 8 + (frozen - shape["quantizable"]) * 4 + trainable * 4
    act_scale = DTYPE_BYTES[precision] / 2  # the paper's constants are for 16-bit activations
    s, b, h, a = seq, micro, shape["hidden"], shape["heads"]
    per_layer = s * b * h * (34 + 5 * a * s / h) * act_scale
    mem = Memory(
        parameters=total,
        trainable=trainable,
        load_dtype=load_dtype,
        weights=weights // shards,
        gradients=trainable * 4 // shards,
        optimizer=trainable * 8 // shards,
        activations=int(per_layer * shape["layers"]),
        logits=b * s * shape["vocab"] * 4 * 2,
        micro_batch=micro,
        seq=seq,
        device=device,
        available=available_memory(device),
        shards=shards,
        quantization=quantization,
    )
    if mem.available is not None and mem.total > mem.available:
        mem.warning = (
            f"likely out of memory: about {mem.total / GIB:.1f} GiB needed, {mem.available / GIB:.1f} GiB "
            f"free on {device}. Lower local.micro_batch_size (gradient accumulation keeps the effective "
            "batch), lower local.max_seq_length, use LoRA (with local.quantization 4bit on a GPU), shard the model "
            "over more processes (local.distributed fsdp), or pick a smaller model"
        )
    elif mem.available is not None and mem.total > 0.8 * mem.available:
        mem.warning = f"tight: about {mem.total / GIB:.1f} GiB needed of {mem.available / GIB:.1f} GiB free on {device}"
    return mem


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled in a thread)."""

    def __enter__(self):
        import psutil

        self._proc = psutil.Process()
        self.base = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        while not self._stop.wait(0.01):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base
