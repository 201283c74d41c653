"""Loading models and tokenizers for training and inference, and wrapping a model with LoRA.

Every model reference (catalog UUID or name, Hugging Face repo id, local folder, the bundled model) goes through
:func:`ftkit.models.catalog.resolve_model` and then one ``from_pretrained`` call, so they all behave the same.
This is the one tokenizer loader: training, estimates, data checks, previews and inference all use it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import warnings

from ftkit.errors import FtkitError
from ftkit.models.catalog import resolve_model
from ftkit.models.hubaccess import hub_load_options

ALL_LINEAR = "all-linear"
TORCH_DTYPES = ("fp32", "bf16", "fp16")
BITSANDBYTES_MISSING = (
    "quantisation needs the bitsandbytes package, which is not installed: pip install 'ftkit[qlora]' "
    "(or use local.quantization none)"
)


class TokenizerError(FtkitError, ValueError):
    """A model's tokenizer cannot be loaded, or lacks the chat template ftkit formats rows with."""


class LayerChoiceError(FtkitError, ValueError):
    """Last layers were asked for that the model does not have."""


class QuantizationUnavailable(FtkitError, RuntimeError):
    """local.quantization was asked for without the bitsandbytes package."""


class _DropMessages(logging.Filter):
    def __init__(self, fragment: str):
        super().__init__()
        self.fragment = fragment

    def filter(self, record: logging.LogRecord) -> bool:
        return self.fragment not in record.getMessage()


# bitsandbytes, once installed, is imported by peft in every run and logs two warnings nobody can act on: at import,
# that an optional CPU kernel of the Hub's `kernels` package is missing (bitsandbytes' own kernel runs instead),
# and at every 8-bit matmul, that its inputs are cast to fp16 (what LLM.int8() does)
logging.getLogger("bitsandbytes.backends.cpu.ops").addFilter(_DropMessages("from kernels-community"))
logging.getLogger("bitsandbytes.autograd._functions").addFilter(_DropMessages("inputs will be cast from"))


def progress_bars_wanted() -> bool:
    """Progress bars only on a terminal, where they redraw in place. Anywhere else every redraw stays: a log file or
    a pipe keeps a line of escape codes per update, and a saved notebook keeps a bar frozen at its first value."""
    return sys.stderr.isatty()


@contextlib.contextmanager
def quiet_loading(progress: bool | None = None):
    """Load models without third-party output the user cannot act on, for the duration of the block only:
    transformers' "Loading weights" and the Hub's download bars unless ``progress`` (default: on a terminal or in
    a notebook), and peft's FutureWarning about transformers' renamed ``is_gradient_checkpointing``."""
    from transformers.utils import logging as hf_logging

    hide = not (progress_bars_wanted() if progress is None else progress)
    was_on = hf_logging.is_progress_bar_enabled()
    if hide and was_on:
        hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r".*is_gradient_checkpointing", FutureWarning)
            yield
    finally:
        if hide and was_on:
            hf_logging.enable_progress_bar()


def save_model(model, folder, state_dict: dict | None = None) -> None:
    """``save_pretrained`` as safetensors, without transformers 5's "Writing model shards" bar (frozen at 0% in a
    saved notebook) unless bars are wanted (:func:`quiet_loading`). ``state_dict``: the weights gathered from a
    sharded model (FSDP), whose own parameters are only this process's shards."""
    with quiet_loading():
        model.save_pretrained(folder, safe_serialization=True, state_dict=state_dict)


def hub_options(info) -> dict:
    """``from_pretrained`` arguments for where the model comes from: a Hub model offline loads from the local
    cache, or fails at once with what to do (:func:`~ftkit.models.hubaccess.hub_load_options`)."""
    return hub_load_options(info.hf_repo) if info.kind in ("hub", "catalog") else {}


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
    options = hub_options(info)
    try:
        tok = AutoTokenizer.from_pretrained(info.source, trust_remote_code=trust_remote_code, **options)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"cannot load the tokenizer of model {info.name!r} from {info.source}: {e}") from e
    ensure_pad_token(tok)
    if require_chat_template and tok.chat_template is None:
        raise TokenizerError(
            f"model {info.name!r} has no chat template; ftkit formats rows with the model's chat template "
            "(use an instruct/chat model or a tokenizer that defines one)"
        )
    return tok


def load_model(
    model_ref,
    device: str = "cpu",
    dtype: str = "fp32",
    trust_remote_code: bool = False,
    progress: bool | None = None,
    quantization: str = "none",
    attention: str | None = None,
):
    """Load a causal LM and its tokenizer from any model reference; returns ``(model, tokenizer, info)``.
    ``progress``: loading and download bars (default: on a terminal or in a notebook). ``quantization`` (4bit,
    8bit): the linear layers quantised by bitsandbytes as they load, straight onto ``device``, computing in
    ``dtype``. ``attention``: an ``attn_implementation`` (see :mod:`ftkit.models.kernels`); None, transformers'
    default."""
    from transformers import AutoModelForCausalLM

    info = resolve_model(model_ref)
    tokenizer = load_tokenizer(info, trust_remote_code=trust_remote_code)
    placement = {}
    if quantization != "none":  # a quantised model cannot be moved after loading
        placement = {"quantization_config": bnb_config(quantization, dtype), "device_map": {"": _device_of(device)}}
    with quiet_loading(progress):
        model = AutoModelForCausalLM.from_pretrained(
            info.source,
            dtype=torch_dtype(dtype),
            trust_remote_code=trust_remote_code,
            **hub_options(info),
            **placement,
            **({"attn_implementation": attention} if attention else {}),
        )
    ensure_pad_token(tokenizer, model)
    if not placement:
        model.to(device)
    return model, tokenizer, info


def bitsandbytes_installed() -> bool:
    """Whether local.quantization can run here (the qlora extra's bitsandbytes), without importing it."""
    return importlib.util.find_spec("bitsandbytes") is not None


def bnb_config(quantization: str, dtype: str):
    """transformers' BitsAndBytesConfig for local.quantization: 4bit = QLoRA's NF4 with nested quantisation of the
    block scales, 8bit = LLM.int8(); the matmuls compute in ``dtype``."""
    if not bitsandbytes_installed():
        raise QuantizationUnavailable(f"local.quantization {quantization}: {BITSANDBYTES_MISSING}")
    from transformers import BitsAndBytesConfig

    if quantization == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch_dtype(dtype),
    )


def _device_of(device: str) -> str:
    # each process of a multi-GPU run loads onto its own GPU
    return f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if device == "cuda" else device


def apply_lora(model, r: int, alpha: int, dropout: float, modules: list[str] | None, last_layers: int | None = None):
    """Wrap ``model`` with peft LoRA adapters; an empty module list means every linear layer ("all-linear").

    ``last_layers`` puts adapters on the last N transformer layers only (see :func:`top_layers`).
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if getattr(model, "is_quantized", False):
        # QLoRA: the layers that stay unquantised (norms, embeddings) in fp32 for stable training; no gradient
        # checkpointing, which ftkit does not use elsewhere either
        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
    layers = top_layers(model, last_layers)
    if layers is not None and not modules:  # peft takes a layer list only with named modules
        modules = layer_linear_names(model)
    cfg = LoraConfig(
        r=r,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=list(modules) if modules else ALL_LINEAR,
        layers_to_transform=layers,
        task_type="CAUSAL_LM",
        bias="none",
    )
    with quiet_loading():
        return get_peft_model(model, cfg)


def top_layers(model, last_layers: int | None) -> list[int] | None:
    """Indexes of the last ``last_layers`` transformer layers (None: every layer, no restriction)."""
    if last_layers is None:
        return None
    n = getattr(model.config, "num_hidden_layers", None)
    if not n:
        raise LayerChoiceError(
            f"{type(model).__name__} has no num_hidden_layers in its config, so last layers cannot be picked"
        )
    if last_layers > n:
        raise LayerChoiceError(
            f"local.trainable_layers is {last_layers}, but the model has only {n} transformer layers"
        )
    return list(range(n - last_layers, n))


def layer_linear_names(model) -> list[str]:
    """The names of the linear projections inside the transformer layers (q_proj, ..., down_proj for Llama)."""
    import torch.nn as nn

    return sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if ".layers." in n and isinstance(m, nn.Linear)}
    )


def freeze_all_but_last_layers(model, last_layers: int | None) -> None:
    """Full fine-tuning of the last N layers: every other weight (embeddings, lower layers) stops training."""
    layers = top_layers(model, last_layers)
    if layers is None:
        return
    wanted = tuple(f".layers.{i}." for i in layers)
    for name, p in model.named_parameters():
        # the final norm sits above the last layer, so it trains with them
        p.requires_grad = any(w in name for w in wanted) or name.endswith(("model.norm.weight", "model.norm.bias"))


def count_parameters(model) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    # bitsandbytes packs two 4-bit weights a byte and counts the bytes
    total = sum(p.numel() * (2 if type(p).__name__ == "Params4bit" else 1) for p in model.parameters())
    return trainable, total
