"""ftkit's Trainer callback: metric records, the n_evals schedule, the best adapter, cancel and NaN stops."""

from __future__ import annotations

import json
import math
import sys
import time

import torch
import torch.distributed as dist
from transformers import TrainerCallback

from ftkit.errors import FtkitError
from ftkit.files import atomic_dir, write_json
from ftkit.job import store as jobstore
from ftkit.job.store import METRIC_FIELDS
from ftkit.models.loading import save_model
from ftkit.train.reporting import tracker_metrics
from ftkit.train.trainer import gathered_weights


class TrainingStopped(FtkitError):
    """Training ended early on request (Ctrl-C, SIGTERM, ``ftkit cancel``)."""


def _finite(x) -> bool:
    return x is not None and math.isfinite(x)


def step_line(record: dict, max_steps: int) -> str:
    """One metric record as the line the command line prints: ``ftkit: step 3/6 train_loss 1.234 ...``."""
    shown = (
        ("train_loss", "train_loss {:.4f}"),
        ("eval_loss", "eval_loss {:.4f}"),
        ("perplexity", "perplexity {:.2f}"),
        ("learning_rate", "lr {:.3g}"),
        ("grad_norm", "grad_norm {:.3g}"),
        ("tokens_per_second", "{:.0f} tokens/s"),
    )
    parts = [fmt.format(record[k]) for k, fmt in shown if record.get(k) is not None]
    return f"ftkit: step {record['step']}/{max_steps} " + " ".join(parts)


class FtkitCallback(TrainerCallback):
    """Writes a metrics.jsonl record per logged step and evaluation, evaluates and checkpoints on the job's
    schedule, keeps the best adapter (``keep_best``), and stops on a cancel request or a NaN/inf loss."""

    def __init__(
        self,
        job,
        writer: bool,
        eval_steps: list[int],
        signals=None,
        on_record=None,
        tokenizer=None,
        keep_best: bool = True,
        task_scorer=None,
        best_metric: str = "eval_loss",
        echo: bool = False,
    ):
        self.job = job
        self.writer = writer
        self.eval_steps = set(eval_steps)
        self.signals = signals
        self.on_record = on_record
        self.tokenizer = tokenizer
        self.keep_best = keep_best
        self.task_scorer = task_scorer  # a ftkit.train.tasks.TaskScorer, or None
        self.best_metric = best_metric
        self.last_eval: dict = {}
        self.echo = echo  # print one line per logged step (the command line; a notebook shows the Trainer's table)
        self.trainer = None  # set by the engine: the trained-token counter lives on the trainer
        self.stop_reason: str | None = None
        self.bad_loss: tuple[int, float] | None = None
        self.last_eval_loss: float | None = None

    # --- helpers ---
    def _take_trained_tokens(self) -> int:
        n = 0
        if self.trainer is not None:
            n, self.trainer.trained_tokens_pending = self.trainer.trained_tokens_pending, 0
        if dist.is_available() and dist.is_initialized():
            t = torch.tensor([n], dtype=torch.long)
            dist.all_reduce(t)
            n = int(t.item())
        return n

    def _emit(self, record: dict) -> None:
        if not self.writer:
            return
        with open(self.job.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
            f.flush()
        if self.on_record is not None:
            self.on_record(record)

    # --- Trainer events ---
    def on_train_begin(self, args, state, control, **kwargs):
        last = self.job.metrics()[-1] if self.writer and self.job.metrics_path.exists() else {}
        self.elapsed0 = last.get("elapsed") or 0.0
        self.trained = last.get("trained_tokens") or 0
        self.t0 = self.t_last = time.perf_counter()
        self.seen_last = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step in self.eval_steps:
            control.should_evaluate = True
            control.should_save = True
        cancel_file = (self.job.path / jobstore.CANCEL_FILE).exists()
        requested = self.signals.requested if self.signals is not None else None
        if (requested or cancel_file) and self.stop_reason is None:
            self.stop_reason = f"{requested or 'ftkit cancel'} at step {state.global_step}"
            control.should_save = True
            control.should_training_stop = True
        return control

    def on_log(self, args, state, control, logs=None, **kwargs):
        logs = logs if logs is not None else {}
        if "train_loss" in logs and "loss" not in logs:  # the Trainer's end-of-run summary, not a step record
            return
        now = time.perf_counter()
        record = dict.fromkeys(METRIC_FIELDS)
        record.update(
            step=state.global_step,
            epoch=round(state.epoch or 0.0, 4),
            tokens_seen=int(state.num_input_tokens_seen),
            elapsed=round(self.elapsed0 + now - self.t0, 3),
        )
        if "eval_loss" in logs:
            loss = logs["eval_loss"]
            record["eval_loss"] = loss
            record["perplexity"] = math.exp(loss) if _finite(loss) and loss < 700 else None
            self.last_eval_loss = loss
            # a model FSDP shards runs forward on every process together, so every process scores
            if self.task_scorer is not None and (self.writer or self.trainer.is_fsdp_enabled):
                with self.trainer.accelerator.autocast():
                    record.update(self.task_scorer(self.trainer.model))
                if self.writer:
                    self._log_task(record)
            self.last_eval = record
            logs.update(tracker_metrics(record))  # the trackers' callbacks run after this one: same run, same step
        elif "loss" in logs:
            self.trained += self._take_trained_tokens()
            dt = max(now - self.t_last, 1e-9)
            record.update(
                train_loss=logs["loss"],
                learning_rate=logs.get("learning_rate"),
                grad_norm=logs.get("grad_norm"),
                tokens_per_second=round((state.num_input_tokens_seen - self.seen_last) / dt, 2),
            )
            self.t_last, self.seen_last = now, state.num_input_tokens_seen
        else:
            return
        record["trained_tokens"] = self.trained
        loss = record["train_loss"] if record["train_loss"] is not None else record["eval_loss"]
        if not _finite(loss):
            self.bad_loss = (state.global_step, loss)
            control.should_training_stop = True
            control.should_save = False
        self._emit(record)
        if self.writer:
            self.job.update(progress={"step": state.global_step, "max_steps": state.max_steps})
            if self.echo:
                from tqdm import tqdm  # writes above a progress bar when there is one

                tqdm.write(step_line(record, state.max_steps), file=sys.stdout)
        return control

    def _log_task(self, r: dict) -> None:
        shares = ", ".join(f"{k} {v:.0%}" for k, v in r["eval_label_shares"].items())
        auc = "n/a" if r["eval_auc"] is None else f"{r['eval_auc']:.3f}"
        self.job.log(
            f"evaluation at step {r['step']}: eval_loss {r['eval_loss']:.4f}, accuracy {r['eval_accuracy']:.3f}, "
            f"macro-F1 {r['eval_macro_f1']:.3f}, AUC {auc}; predicted {shares}",
            echo=self.echo,
        )
        if r["eval_collapsed"] is not None:
            self.job.log(
                f"WARNING: at step {r['step']} the validation predictions collapsed onto {r['eval_collapsed']!r} "
                f"({r['eval_label_shares'][r['eval_collapsed']]:.0%}): the model is answering the label prior, "
                "not reading the prompt",
                echo=self.echo,
            )

    def _better(self, new: dict, prev: dict | None) -> bool:
        """Whether evaluation ``new`` beats the best so far: lowest eval_loss, or highest task metric (ties: the
        lower eval_loss)."""
        if prev is None:
            return True
        if self.best_metric == "eval_loss":
            return new["eval_loss"] < prev["eval_loss"]
        if new.get(self.best_metric) is None:
            return False
        old = prev.get(self.best_metric)
        return old is None or (new[self.best_metric], -new["eval_loss"]) > (old, -prev["eval_loss"])

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        loss = (metrics or {}).get("eval_loss")
        if not self.keep_best or not _finite(loss) or model is None:
            return
        weights = gathered_weights(self.trainer) if self.trainer is not None else None  # every process, under FSDP
        if not self.writer:
            return
        best = self.job.path / "best"
        try:
            prev = json.loads((best / "best.json").read_text())
        except (OSError, ValueError):
            prev = None
        # A "best" recorded after the step we are at came from a run we resumed before: it no longer counts.
        if prev is not None and prev["step"] > state.global_step:
            prev = None
        new = {
            "step": state.global_step,
            "metric": self.best_metric,
            "eval_loss": loss,
            **{k: v for k, v in self.last_eval.items() if k.startswith("eval_") and k != "eval_loss"},
        }
        new["value"] = new.get(self.best_metric)
        if not self._better(new, prev):
            return
        with atomic_dir(best) as tmp:
            save_model(model, tmp, weights)
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(tmp)
            write_json(tmp / "best.json", new)

    def raise_if_stopped(self) -> None:
        if self.bad_loss is not None:
            step, value = self.bad_loss
            raise FloatingPointError(
                f"loss became {value} at step {step}; training stopped. Lower learning_rate, check the data for "
                "empty or corrupt rows, or use precision bf16/fp32 instead of fp16"
            )
        if self.stop_reason is not None:
            raise TrainingStopped(self.stop_reason)
