"""Timed training steps of the real model on the job's own batches, built exactly as the engine builds them
(:func:`ftkit.train.trainer.build_model`, :func:`~ftkit.train.trainer.make_trainer`), for the estimate."""

from __future__ import annotations

import tempfile
import time

import torch
from transformers import PrinterCallback, TrainerCallback

from ftkit.models.device import pick_device, pick_precision
from ftkit.train.flops import Shape, training_flops
from ftkit.train.memory import PeakRSS
from ftkit.train.plan import batching_for
from ftkit.train.timing import Timing, busy_note, extrapolate, row_lengths, target_tokens
from ftkit.train.trainer import CountingTrainer, build_model, make_trainer, trainer_arguments


def measure_steps(spec, enc_train, enc_val, steps: int, schedule, progress=None) -> tuple[Timing, int]:
    """Time ``steps`` optimizer steps after one warm-up step with the engine's model, collator and Trainer
    settings; returns the timing (extrapolated to ``schedule``) and the measured peak memory in bytes.
    ``progress(stage, done)`` hears the loading, each step and the evaluation (an exception it raises stops)."""
    report = progress or (lambda stage, done: None)
    local = spec.local_settings()
    device = pick_device(local.device)
    precision = pick_precision(device, local.precision)
    cuda = device == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    marks: list[float] = []
    tokens: list[int] = []
    with PeakRSS() as rss:
        t0 = time.perf_counter()
        report("loading the model", 0)
        model, tokenizer, _, _ = build_model(spec, precision, device=device)
        load_seconds = time.perf_counter() - t0
        batching = batching_for(model, local.batching)
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
            trainer = make_trainer(
                model,
                tokenizer,
                args,
                batching,
                enc_train.examples,
                callbacks=[_Clock(marks, cuda, lambda n: report(f"timed step {n} of {steps + 1}", 1 + n))],
                cls=_Counting,
            )
            trainer.step_tokens, trainer.step_rows = tokens, []
            trainer.remove_callback(PrinterCallback)  # the end-of-run summary is not this estimate's
            report(f"timing step 1 of {steps + 1} (warm-up)", 1)
            trainer.train()
            report("timing the evaluation", steps + 2)
            eval_rate = _eval_rate(trainer, enc_val, schedule, cuda)
    peak = int(torch.cuda.max_memory_allocated()) if cuda else rss.growth
    flops = _step_flops(spec, Shape.from_config(model.config), trainer.step_rows[1:])
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
        step_flops=flops,
    )
    extrapolate(timing, schedule, enc_train.n_tokens, enc_val.n_tokens)
    busy_note(timing, device)
    return timing, peak


class _Clock(TrainerCallback):
    """Appends a timestamp when training begins and after every optimizer step, and reports the step."""

    def __init__(self, marks: list[float], cuda: bool, report):
        self.marks, self.cuda, self.report = marks, cuda, report

    def on_train_begin(self, args, state, control, **kw):
        self.marks.append(time.perf_counter())

    def on_step_end(self, args, state, control, **kw):
        if self.cuda:
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())
        self.report(state.global_step)


def _step_flops(spec, shape: Shape, step_rows: list[tuple[list[int], int]]) -> list[float]:
    """Model FLOPs of each step from its rows' real lengths and target count, with the job's LoRA settings."""
    hp, local = spec.hyperparameters, spec.local_settings()
    lora = hp.lora
    r, modules = (lora.r, lora.trainable_modules) if lora.enabled else (None, ())
    return [training_flops(shape, n, t, r, modules, local.trainable_layers).total for n, t in step_rows]


class _Counting(CountingTrainer):
    """The engine's Trainer, so the timed steps are the engine's; it also records each step's real tokens, row
    lengths and targets (for its model FLOPs)."""

    step_tokens: list[int]
    step_rows: list[tuple[list[int], int]]

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, n = super().get_batch_samples(epoch_iterator, num_batches, device)
        lengths = [k for b in batches for k in row_lengths(b)]
        self.step_tokens.append(sum(lengths))
        self.step_rows.append((lengths, sum(target_tokens(b) for b in batches)))
        return batches, n


def _eval_rate(trainer, enc_val, schedule, cuda: bool) -> float | None:
    """Evaluation tokens per second over at most two micro-batches (evaluation is a forward pass)."""
    if not (enc_val.examples and schedule.evaluations):
        return None
    subset = enc_val.examples[: 2 * schedule.micro_batch]
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    trainer.evaluate(eval_dataset=subset)
    if cuda:
        torch.cuda.synchronize()
    return sum(len(e["input_ids"]) for e in subset) / (time.perf_counter() - t)
