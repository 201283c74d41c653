"""Seconds measured on this machine (:mod:`ftkit.train.measure` times them) and their extrapolation to a job."""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

import psutil


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
    step_flops: list[float] = field(default_factory=list)
    """Model FLOPs of each measured step (:func:`ftkit.train.flops.training_flops`: useful work only)."""
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
    def model_flops_per_second(self) -> float | None:
        """Model FLOPs the measured steps did per second (None when they were not counted)."""
        if not self.step_flops:
            return None
        return sum(self.step_flops) / max(sum(self.step_seconds), 1e-9)

    @property
    def total_seconds(self) -> float:
        return self.train_seconds + self.eval_seconds


def busy_note(timing: Timing, device: str) -> None:
    """Say when the numbers are likely pessimistic: other work on the CPU slows PyTorch's threads a lot."""
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


def row_lengths(batch) -> list[int]:
    """Real (non-pad) tokens of each row of a micro-batch: the attention mask's row sums, or for a padding-free
    batch (one packed row, no mask) the segments where its position ids restart at 0."""
    mask = batch.get("attention_mask")
    if mask is not None:
        return [int(n) for n in mask.sum(-1).tolist()]
    ids, pos = batch["input_ids"], batch.get("position_ids")
    if pos is None:
        return [ids.shape[-1]] * ids.shape[0]
    starts = (pos.reshape(-1) == 0).nonzero().reshape(-1).tolist() + [pos.numel()]
    return [b - a for a, b in zip(starts, starts[1:], strict=False)]


def target_tokens(batch) -> int:
    """Labels that are prediction targets after the one-position shift."""
    return int((batch["labels"][..., 1:] != -100).sum())


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
