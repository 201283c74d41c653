"""ftkit's Trainer (trained-token counting, logits only where there is a target), its TrainingArguments, and
the model and Trainer construction that training and the estimate's timed steps share, so both run the same steps.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import sys

import torch
import torch.nn.functional as F
from accelerate.utils import DistributedType
from transformers import Trainer, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from ftkit.data.encoding import collator_for
from ftkit.errors import FtkitError
from ftkit.models.device import Precision
from ftkit.models.kernels import apply_liger, attention_implementation
from ftkit.models.loading import apply_lora, count_parameters, freeze_all_but_last_layers, load_model
from ftkit.models.lora_forward import use_lean_lora_forward
from ftkit.train.timing import target_tokens


def build_model(spec, precision: Precision, progress: bool | None = None, device: str = "cpu"):
    """(model, tokenizer, info, (trainable, total) parameters) of a job: its base model in the training
    precision's load dtype, on the CPU (the Trainer moves it; a quantised base loads onto ``device``, as it cannot
    move), with LoRA adapters unless lora.enabled is false."""
    hp, local = spec.hyperparameters, spec.local_settings()
    dtype = precision.load_dtype(hp.lora.enabled)
    model, tokenizer, info = load_model(
        spec.resolved_model(),
        device=device if local.quantization != "none" else "cpu",
        dtype=dtype,
        trust_remote_code=local.trust_remote_code,
        progress=progress,
        quantization=local.quantization,
        attention=attention_implementation(device, dtype),
    )
    apply_liger(model, device)
    model.config.use_cache = False  # a KV cache during training disables the packed-sequence attention mask
    if hp.lora.enabled:
        lora = hp.lora
        # local.seed fixes the adapters' random start; FSDP needs it: each process shards its own copy of the model
        torch.manual_seed(local.seed)
        model = apply_lora(model, lora.r, lora.alpha, lora.dropout, lora.trainable_modules, local.trainable_layers)
        use_lean_lora_forward(model)
    else:
        freeze_all_but_last_layers(model, local.trainable_layers)
    return model, tokenizer, info, count_parameters(model)


def trainer_arguments(
    output_dir, spec, micro: int, accum: int, device: str, precision, batching: str, world: int = 1, **run
):
    """The TrainingArguments every ftkit training run uses (the engine and the estimate's timed steps), plus
    ``run``: what differs between them (schedule length, logging, saving, ``report_to``: the trackers, which only
    the engine names, so the estimate's timed steps never start a tracker run)."""
    hp, local = spec.hyperparameters, spec.local_settings()
    report_to = run.pop("report_to", [])
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=micro,
        per_device_eval_batch_size=micro,
        gradient_accumulation_steps=accum,
        learning_rate=hp.learning_rate,
        weight_decay=hp.weight_decay,
        lr_scheduler_type="linear",
        eval_strategy="no",  # evaluations follow ftkit's own n_evals schedule (FtkitCallback)
        prediction_loss_only=True,  # evaluation needs the loss only; keeping logits costs batch x length x vocab
        report_to=report_to,
        seed=local.seed,
        use_cpu=device == "cpu",
        remove_unused_columns=False,
        train_sampling_strategy="group_by_length" if batching == "padded" else "random",
        ddp_find_unused_parameters=False,
        torch_compile=local.torch_compile,
        **precision.trainer_flags,
        **fsdp_arguments(spec, world),
        **run,
    )


def fsdp_arguments(spec, world: int) -> dict:
    """The Trainer's ``fsdp`` / ``fsdp_config`` for local.distributed fsdp over ``world`` processes (none for one
    process, or ddp): FSDP2 through accelerate, fully sharded, each decoder layer (the model's ``_no_split_modules``)
    its own unit. FSDP2 shards every parameter, frozen or not, so a layer's LoRA adapters are sharded with it.
    Checkpoints are sharded (torch.distributed.checkpoint: each process writes its own shards, nothing is gathered
    on one process, which a 14B model's full state dict would need in CPU memory), and a resume reads them back."""
    if spec.local.distributed != "fsdp" or world < 2:
        return {}
    return {
        "fsdp": True,
        "fsdp_config": {"version": 2, "reshard_after_forward": True, "state_dict_type": "SHARDED_STATE_DICT"},
    }


def make_trainer(model, tokenizer, args, batching: str, train, evaluation=None, callbacks=(), cls=None):
    """A :class:`CountingTrainer` (or the subclass ``cls``) over encoded examples with the batching's collator.

    The Trainer's own log printing is taken out (ftkit's callback prints one line per logged step, with numbers as
    numbers): PrinterCallback goes, and the console progress bar stays but stops writing the raw log dicts.
    """
    trainer = (cls or CountingTrainer)(
        model=model,
        args=args,
        data_collator=collator_for(batching, tokenizer, weighted=bool(train) and "weight" in train[0]),
        train_dataset=train,
        processing_class=tokenizer,
        eval_dataset=evaluation or None,
        callbacks=list(callbacks),
    )
    trainer.remove_callback(PrinterCallback)
    if any(type(c) is ProgressCallback for c in trainer.callback_handler.callbacks):
        trainer.remove_callback(ProgressCallback)
        trainer.add_callback(BarOnly())
    return trainer


def gathered_weights(trainer) -> dict | None:
    """The weights to save, whole, of a model FSDP shards across processes; None when it is not sharded (then
    ``save_pretrained`` reads the model itself). A collective: every process must call it. A LoRA model gathers its
    adapters alone (every process gets them); full fine-tuning gathers the whole model on the main process."""
    if not trainer.is_fsdp_enabled:
        return None
    model = trainer.model
    if not hasattr(model, "peft_config"):
        return trainer.accelerator.get_state_dict(model)
    return {
        name: p.full_tensor() if hasattr(p, "full_tensor") else p.detach()
        for name, p in model.named_parameters()
        if p.requires_grad
    }


class TrainingSetupError(FtkitError, ValueError):
    """A training option this model or job cannot use."""


class _DropMessages(logging.Filter):
    def __init__(self, *fragments: str):
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        return not any(f in record.getMessage() for f in self.fragments)


@contextlib.contextmanager
def without_trainer_chatter():
    """Drop, for the block only, the Trainer's log warnings that a user cannot act on: checkpoint rotation's note
    that file times may be unreliable on this filesystem (it then orders checkpoints by number, which is right)."""
    logger, chatter = logging.getLogger("transformers.trainer_utils"), _DropMessages("mtime may not be reliable")
    logger.addFilter(chatter)
    try:
        yield
    finally:
        logger.removeFilter(chatter)


class BarOnly(ProgressCallback):
    """The Trainer's console progress bar without the log dict it writes under the bar at every logging step."""

    def on_log(self, args, state, control, logs=None, **kwargs):
        return None


class CountingTrainer(Trainer):
    """The Trainer with two additions: it counts trained tokens (labels that are prediction targets) per optimizer
    step for the metrics, and it projects only the positions that have a target onto the vocabulary.

    With prompt masking most positions are prompt; the model's default loss still computes logits for all of them
    (a batch x length x vocabulary tensor, 49k wide for SmolLM2) and throws them away. Passing the target positions
    as ``logits_to_keep`` skips that work: forward + backward of the bundled model on 4 x 384 tokens with a
    12-token answer took 10.1 s instead of 15.5 s here, for the same loss to fp32 rounding (tests/test_train.py).
    """

    trained_tokens_pending = 0

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        plugin_args = self.args.fsdp_plugin_args
        state = self.accelerator.state
        if plugin_args and not self.is_fsdp_enabled and state.distributed_type == DistributedType.MULTI_CPU:
            # accelerate enables an FSDP plugin for accelerator devices only and drops it, silently, for CPU
            # processes; FSDP2 itself shards over gloo, so CPU runs take the same sharded path as GPU runs. The
            # process state is set too: accelerate copies it back into the accelerator's state on every access.
            from accelerate import PartialState
            from accelerate.utils import FullyShardedDataParallelPlugin

            plugin = FullyShardedDataParallelPlugin(**plugin_args)
            if state.mixed_precision != "no":
                plugin.set_mixed_precision(state.mixed_precision)
            state.fsdp_plugin = plugin
            state.distributed_type = PartialState().distributed_type = DistributedType.FSDP
            self.is_fsdp_enabled = True

    def get_batch_samples(self, epoch_iterator, num_batches, device):
        batches, n = super().get_batch_samples(epoch_iterator, num_batches, device)
        for b in batches:
            self.trained_tokens_pending += target_tokens(b)
        return batches, n

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.get("labels")
        weights = inputs.pop("token_weights", None)
        if labels is None or not slices_logits(self.accelerator.unwrap_model(model)):
            if weights is not None:
                raise TrainingSetupError(
                    "local.class_weights needs a model whose forward takes a logits_to_keep mask (Llama-family "
                    "models do); use class_weights none with this model"
                )
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)

        per_token, outputs, keep = target_positions_forward(model, inputs)
        if weights is not None:  # a row's weight scales each of its target tokens (class balancing)
            per_token = per_token * weights[..., 1:][keep[..., :-1]].to(per_token.dtype)
        loss = per_token.sum()
        # normalised as the model's own loss would be, so Trainer's gradient-accumulation scaling stays right
        if num_items_in_batch is not None and self.model_accepts_loss_kwargs:  # over the accumulated batch
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices:
                loss = loss * self.accelerator.num_processes
        else:  # the mean over this batch (evaluation)
            loss = loss / keep.sum().clamp(min=1)
        outputs.loss = loss
        return (loss, outputs) if return_outputs else loss


def target_positions_forward(model, inputs: dict):
    """(per-token cross-entropy of the prediction targets, the model's outputs, the mask of positions kept): one
    forward that projects only the positions with a target onto the vocabulary (``inputs`` holds ``labels``)."""
    labels = inputs["labels"]
    targets = labels[..., 1:]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[..., :-1] = targets != -100  # position t predicts token t + 1
    outputs = model(**{k: v for k, v in inputs.items() if k != "labels"}, logits_to_keep=keep)
    per_token = F.cross_entropy(outputs.logits.float(), targets[keep[..., :-1]], reduction="none")
    return per_token, outputs, keep


def slices_logits(model) -> bool:
    """Whether the model's forward takes a boolean ``logits_to_keep`` mask (transformers' shared slicing helper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if "logits_to_keep" not in inspect.signature(base.forward).parameters:
        return False
    return hasattr(sys.modules[type(base).__module__], "slice_logits_to_keep")
