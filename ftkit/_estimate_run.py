"""The parts of a pre-launch estimate that need the model: its shape and a memory formula (config only, no
weights), and timed training steps on the real model and data, set up the way ``ftkit.train`` sets them up.
"""

from __future__ import annotations

import math
import tempfile
import threading
import time
import warnings
from dataclasses import dataclass, field

DTYPE_BYTES = {"fp32": 4, "bf16": 2, "fp16": 2}
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
    keep fp32 weights)."""
    gradients: int
    """Trainable parameters x 4 bytes (fp32)."""
    optimizer: int
    """AdamW's two fp32 moments: trainable parameters x 8 bytes."""
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
    measured_peak: int | None = None
    """Measured while timing steps: CUDA max_memory_allocated, or on CPU the growth of the process's
    resident memory (sampled every 10 ms) from before the model was loaded."""
    warning: str | None = None

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.activations + self.logits


@dataclass
class Timing:
    """Seconds measured on this machine and the extrapolation to the whole job."""

    device: str
    precision: str
    batching: str
    warmup_steps: int
    measured_steps: int
    step_seconds: list[float]
    """Seconds of each measured optimizer step (forward + backward + optimizer step, all micro-batches)."""
    step_tokens: list[int]
    """Real (non-padding) tokens of each measured step."""
    load_seconds: float
    """Building the model (load + LoRA), not part of the extrapolation."""
    eval_tokens_per_second: float | None
    train_seconds: float = 0.0
    eval_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def seconds_per_step(self) -> float:
        return sum(self.step_seconds) / len(self.step_seconds)

    @property
    def tokens_per_second(self) -> float:
        return sum(self.step_tokens) / max(sum(self.step_seconds), 1e-9)

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.eval_seconds


def model_shape(info, lora, trust_remote_code: bool = False) -> dict:
    """Layers, hidden size, heads, vocabulary and parameter counts, from ``config.json`` alone: the model is
    built on torch's meta device (no weights are read or downloaded)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from .modeling import apply_lora, count_parameters

    cfg = AutoConfig.from_pretrained(info.source, trust_remote_code=trust_remote_code)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # peft asks a deprecated transformers property
        model = AutoModelForCausalLM.from_config(cfg, trust_remote_code=trust_remote_code)
        if lora.enabled:
            model = apply_lora(model, lora.r, lora.alpha, lora.dropout, lora.trainable_modules)
    trainable, total = count_parameters(model)
    text = getattr(cfg, "text_config", None) or cfg
    return {
        "layers": text.num_hidden_layers,
        "hidden": text.hidden_size,
        "heads": text.num_attention_heads,
        "vocab": text.vocab_size,
        "parameters": total,
        "trainable": trainable,
    }


def available_memory(device: str) -> int | None:
    import psutil

    if device == "cuda":
        import torch

        return int(torch.cuda.mem_get_info()[0])
    return int(psutil.virtual_memory().available)


def memory_formula(shape: dict, load_dtype: str, precision: str, micro: int, seq: int, device: str) -> Memory:
    """The documented rough formula of :class:`Memory`, and a warning when it exceeds the free memory."""
    trainable, total = shape["trainable"], shape["parameters"]
    act_scale = DTYPE_BYTES[precision] / 2  # the paper's constants are for 16-bit activations
    s, b, h, a = seq, micro, shape["hidden"], shape["heads"]
    per_layer = s * b * h * (34 + 5 * a * s / h) * act_scale
    mem = Memory(
        parameters=total,
        trainable=trainable,
        load_dtype=load_dtype,
        weights=(total - trainable) * DTYPE_BYTES[load_dtype] + trainable * 4,
        gradients=trainable * 4,
        optimizer=trainable * 8,
        activations=int(per_layer * shape["layers"]),
        logits=b * s * shape["vocab"] * 4 * 2,
        micro_batch=micro,
        seq=seq,
        device=device,
        available=available_memory(device),
    )
    if mem.available is not None and mem.total > mem.available:
        mem.warning = (
            f"likely out of memory: about {mem.total / GIB:.1f} GiB needed, {mem.available / GIB:.1f} GiB "
            f"free on {device}. Lower local.micro_batch_size (gradient accumulation keeps the effective "
            "batch), lower local.max_seq_length, use LoRA, or pick a smaller model"
        )
    elif mem.available is not None and mem.total > 0.8 * mem.available:
        mem.warning = (
            f"tight: about {mem.total / GIB:.1f} GiB needed of {mem.available / GIB:.1f} GiB free on {device}"
        )
    return mem


class _PeakRSS:
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


def measure_steps(spec, enc_train, enc_val, steps: int, schedule) -> tuple[Timing, int]:
    """Time ``steps`` optimizer steps after one warm-up step with the engine's model, collator and Trainer
    settings; returns the timing (extrapolated to ``schedule``) and the measured peak memory in bytes."""
    import torch
    from transformers import PrinterCallback, TrainerCallback

    from . import modeling
    from .encoding import collator_for
    from .train import _CountingTrainer, auto_batching, trainer_arguments

    local, hp = spec.local_settings(), spec.hyperparameters
    device = modeling.pick_device(local.device)
    precision = modeling.pick_precision(device, local.precision)
    load_dtype = precision.name if hp.lora.enabled else "fp32"  # as ftkit.train: fp32 master weights
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    with _PeakRSS() as rss:
        t0 = time.perf_counter()
        model, tokenizer, _ = modeling.load_model(
            spec.resolved_model(), device="cpu", dtype=load_dtype, trust_remote_code=local.trust_remote_code
        )
        model.config.use_cache = False
        if hp.lora.enabled:
            model = modeling.apply_lora(
                model, hp.lora.r, hp.lora.alpha, hp.lora.dropout, hp.lora.trainable_modules
            )
        load_seconds = time.perf_counter() - t0
        batching = local.batching if local.batching != "auto" else auto_batching(model)

        marks: list[float] = []
        tokens: list[int] = []

        class Clock(TrainerCallback):
            def on_train_begin(self, args, state, control, **kw):
                marks.append(time.perf_counter())

            def on_step_end(self, args, state, control, **kw):
                if cuda:
                    torch.cuda.synchronize()
                marks.append(time.perf_counter())

        class Counting(_CountingTrainer):  # the engine's Trainer, so the timed steps are the engine's
            def get_batch_samples(self, epoch_iterator, num_batches, dev):
                batches, n = super().get_batch_samples(epoch_iterator, num_batches, dev)
                tokens.append(sum(_real_tokens(b) for b in batches))
                return batches, n

        with tempfile.TemporaryDirectory(prefix="ftkit-estimate-") as tmp:
            args = trainer_arguments(
                tmp,
                spec,
                schedule.micro_batch,
                schedule.accumulation,
                device,
                precision,
                batching,
                max_steps=steps + 1,
                logging_strategy="no",
                save_strategy="no",
                disable_tqdm=True,
            )
            collator = collator_for(batching, tokenizer)
            trainer = Counting(
                model=model,
                args=args,
                data_collator=collator,
                train_dataset=enc_train.examples,
                processing_class=tokenizer,
                callbacks=[Clock()],
            )
            trainer.remove_callback(PrinterCallback)  # the end-of-run summary is not this estimate's
            trainer.train()
            eval_rate = None
            if enc_val.examples and schedule.evaluations:
                # at most two micro-batches: evaluation is a forward pass, timed per token
                subset = enc_val.examples[: 2 * schedule.micro_batch]
                if cuda:
                    torch.cuda.synchronize()
                t = time.perf_counter()
                trainer.evaluate(eval_dataset=subset)
                if cuda:
                    torch.cuda.synchronize()
                eval_rate = sum(len(e["input_ids"]) for e in subset) / (time.perf_counter() - t)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else rss.growth
    del trainer, model
    if cuda:
        torch.cuda.empty_cache()

    durations = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    timing = Timing(
        device=device,
        precision=precision.name,
        batching=batching,
        warmup_steps=1,
        measured_steps=len(durations) - 1,
        step_seconds=durations[1:],
        step_tokens=tokens[1:],
        load_seconds=load_seconds,
        eval_tokens_per_second=eval_rate,
    )
    extrapolate(timing, schedule, enc_train.n_tokens, enc_val.n_tokens)
    _busy_note(timing, device)
    return timing, peak


def _busy_note(timing: Timing, device: str) -> None:
    """Say when the numbers are likely pessimistic: other work on the CPU slows PyTorch's threads a lot."""
    import os

    import psutil

    steps = timing.step_seconds
    if len(steps) > 1 and max(steps) > 1.5 * min(steps):
        timing.notes.append(
            f"the measured steps took {min(steps):.2f} to {max(steps):.2f} s: the machine's speed varied "
            "(other work running?); measure again when it is quiet, or with more --steps"
        )
    load, cores = psutil.getloadavg()[0], os.cpu_count() or 1
    if device == "cpu" and load > cores:
        timing.notes.append(
            f"the CPU was busy while measuring (load average {load:.1f} on {cores} cores): the time estimate "
            "is pessimistic for a quiet machine"
        )


def _real_tokens(batch) -> int:
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else int(batch["input_ids"].numel())


def extrapolate(timing: Timing, schedule, train_tokens: int, val_tokens: int) -> None:
    """Whole-job seconds: the measured seconds per step, scaled by how many tokens an average step of the job
    holds against the measured steps (rows differ in length), times the job's optimizer steps; plus the
    validation tokens of every evaluation at the measured forward-pass rate."""
    job_tokens_per_step = train_tokens / schedule.steps_per_epoch
    measured_per_step = sum(timing.step_tokens) / max(len(timing.step_tokens), 1)
    scale = job_tokens_per_step / measured_per_step if measured_per_step else 1.0
    timing.train_seconds = schedule.total_steps * timing.seconds_per_step * scale
    if timing.eval_tokens_per_second:
        timing.eval_seconds = val_tokens * len(schedule.evaluations) / timing.eval_tokens_per_second
    if not math.isclose(scale, 1.0, rel_tol=0.05):
        timing.notes.append(
            f"the measured steps held {measured_per_step:.0f} tokens on average, an average step of the job "
            f"{job_tokens_per_step:.0f}: the per-step time is scaled by {scale:.2f}"
        )
