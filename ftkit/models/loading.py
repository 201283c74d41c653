"""Loading models and tokenizers for training and inference, and wrapping a model with LoRA.

Every model reference (catalog UUID or name, Hugging Face repo id, local folder, the bundled model) goes through
:func:`ftkit.models.catalog.resolve_model` and then one ``from_pretrained`` call, so they all behave the same.
This is the one tokenizer loader: training, estimates, data checks, previews and inference all use it.
"""

from __future__ import annotations

import sys
import warnings

from ftkit.errors import FtkitError
from ftkit.models.catalog import resolve_model

ALL_LINEAR = "all-linear"
TORCH_DTYPES = ("fp32", "bf16", "fp16")


class TokenizerError(FtkitError, ValueError):
    """A model's tokenizer cannot be loaded, or lacks the chat template ftkit formats rows with."""


def torch_dtype(name: str):
    """The torch dtype of "fp32", "bf16" or "fp16"."""
    import torch

    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


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


def load_tokenizer(model_ref, trust_remote_code: bool = False, require_chat_template: bool = True):
    """The tokenizer of any model reference, with a pad token distinct from EOS.

    ``require_chat_template`` (training, inference) refuses a tokenizer without a chat template, since ftkit
    formats rows with it; token counting accepts one (rows are then ``prompt + "\\n\\n" + answer``).
    """
    from transformers import AutoTokenizer

    info = resolve_model(model_ref)
    try:
        tok = AutoTokenizer.from_pretrained(info.source, trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot load the tokenizer of model {info.name!r} from {info.source}: {e}") from e
    ensure_pad_token(tok)
    if require_chat_template and tok.chat_template is None:
        raise TokenizerError(
            f"model {info.name!r} has no chat template; ftkit formats rows with the model's chat template "
            "(use an instruct/chat model or a tokenizer that defines one)"
        )
    return tok


def quiet_third_party() -> None:
    """Keep two kinds of third-party noise out of notebooks and logs, for the rest of the process: peft reads
    transformers' deprecated ``is_gradient_checkpointing`` (a FutureWarning about the libraries' own code that
    no user can act on), and transformers draws "Loading weights" / "Writing model shards" bars, which freeze at
    0% in saved notebook outputs and in logs. Bars stay where stderr is a terminal."""
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    if not sys.stderr.isatty():
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()


def load_model(
    model_ref,
    device: str = "cpu",
    dtype: str = "fp32",
    trust_remote_code: bool = False,
):
    """Load a causal LM and its tokenizer from any model reference; returns ``(model, tokenizer, info)``."""
    from transformers import AutoModelForCausalLM

    quiet_third_party()
    info = resolve_model(model_ref)
    tokenizer = load_tokenizer(info, trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(
        info.source, dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code
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
