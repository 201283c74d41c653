"""Count the tokens of prompt/answer rows the way training sees them, and find a model's tokenizer.

A row is the conversation ``user = prompt, assistant = answer`` (only the assistant turn when there is no
prompt) rendered by the model's chat template, ending at the EOS token: tokens the template puts after its
last EOS (usually a newline) are not counted, and an EOS is added when the template has none. This is what
``ftkit.encoding`` trains on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

_CONTEXT_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def count_chat_tokens(
    tokenizer, prompts: Sequence[str | None] | None, answers: Sequence[str], batch_size: int = 512
) -> list[int]:
    """Tokens per row after applying the chat template (see the module docstring), one count per answer.

    ``prompts`` is None for answer-only data. Tokenizers without a chat template get
    ``prompt + "\\n\\n" + answer`` tokenized with the tokenizer's own special tokens, plus EOS.
    """
    if prompts is not None and len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts but {len(answers)} answers")
    eos = tokenizer.eos_token_id
    counts: list[int] = []
    for start in range(0, len(answers), batch_size):
        ans = answers[start : start + batch_size]
        pro = [None] * len(ans) if prompts is None else prompts[start : start + batch_size]
        if getattr(tokenizer, "chat_template", None):
            convs = [
                ([{"role": "user", "content": p}] if p is not None else [])
                + [{"role": "assistant", "content": a}]
                for p, a in zip(pro, ans, strict=True)
            ]
            # rendering then tokenizing without special tokens is what apply_chat_template(tokenize=True)
            # does, but the batch call lets the Rust tokenizer work on all rows at once
            texts = tokenizer.apply_chat_template(convs, tokenize=False)
            ids = tokenizer(texts, add_special_tokens=False)["input_ids"]
        else:
            texts = [a if p is None else f"{p}\n\n{a}" for p, a in zip(pro, ans, strict=True)]
            ids = tokenizer(texts)["input_ids"]
        for row in ids:
            if eos is not None and eos in row:
                counts.append(len(row) - row[::-1].index(eos))
            else:
                counts.append(len(row) + (eos is not None))
    return counts


def resolve_model_ref(ref: str | os.PathLike) -> tuple[str, Callable[[], int | None], str]:
    """(tokenizer source: local folder or HF repo id, a function giving the context length or None, display
    name) of a model reference. The context length is a function because a hub model's needs a download.

    A local model folder is used as is; otherwise ``ftkit.catalog.resolve_model`` decides when that module
    exists; ``"bundled"`` is the bundled SmolLM2 model.
    """
    p = Path(ref).expanduser()
    if p.is_dir():
        return str(p), lambda: config_context_length(p), str(ref)
    try:
        from .catalog import resolve_model
    except ModuleNotFoundError as e:
        if e.name != f"{__package__}.catalog":
            raise
        resolve_model = None
    if resolve_model is not None:
        info = resolve_model(str(ref))
        source = str(info.source)

        def context() -> int | None:
            try:
                return info.context_length or config_context_length(source)
            except Exception:  # a hub model's config.json cannot be fetched: the length stays unknown
                return None

        return source, context, str(getattr(info, "name", ref))
    if str(ref) == "bundled":
        from . import bundled

        path = bundled.ensure(quiet=True)
        return str(path), lambda: config_context_length(path), bundled.NAME
    raise ValueError(f"model {str(ref)!r} is not a local model folder nor 'bundled'")


def config_context_length(source: str | os.PathLike) -> int | None:
    """The context length in a local model folder's ``config.json`` (None when it is not a local folder)."""
    cfg = Path(source) / "config.json"
    if not cfg.is_file():
        return None
    data = json.loads(cfg.read_text(encoding="utf-8"))
    data = {**data.get("text_config", {}), **data}
    for k in _CONTEXT_KEYS:
        if isinstance(data.get(k), int) and data[k] > 0:
            return data[k]
    return None


def load_tokenizer(model) -> tuple[object, int | None, str]:
    """(tokenizer, context length or None, name) for a tokenizer object or a model reference (see above)."""
    if isinstance(model, (str, os.PathLike)):
        source, context, name = resolve_model_ref(model)
        from transformers import AutoTokenizer

        try:
            tok = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load the tokenizer of model {str(model)!r} from {source}: {e}") from e
        return tok, context(), name
    name = getattr(model, "name_or_path", "") or type(model).__name__
    ctx = config_context_length(name) if name else None
    limit = getattr(model, "model_max_length", None)
    if ctx is None and isinstance(limit, int) and 0 < limit < 10_000_000:  # huge values mean "not set"
        ctx = limit
    return model, ctx, str(name)
