"""Count the tokens of prompt/answer rows the way training sees them, and find a model's tokenizer.

A row is the conversation ``user = prompt, assistant = answer`` (only the assistant turn when there is no
prompt) rendered by the model's chat template, ending at the EOS token: tokens the template puts after its
last EOS (usually a newline) are not counted, and an EOS is added when the template has none. This is what
``ftkit.data.encoding`` trains on.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

from ftkit.errors import UsageError
from ftkit.models.catalog import ModelConfigUnavailable, context_length_from_config, resolve_model
from ftkit.models.loading import load_tokenizer


def count_chat_tokens(
    tokenizer, prompts: Sequence[str | None] | None, answers: Sequence[str], batch_size: int = 512
) -> list[int]:
    """Tokens per row after applying the chat template (see the module docstring), one count per answer.

    ``prompts`` is None for answer-only data. Tokenizers without a chat template get
    ``prompt + "\\n\\n" + answer`` tokenized with the tokenizer's own special tokens, plus EOS.
    """
    if prompts is not None and len(prompts) != len(answers):
        raise UsageError(f"{len(prompts)} prompts but {len(answers)} answers")
    eos = tokenizer.eos_token_id
    counts: list[int] = []
    for start in range(0, len(answers), batch_size):
        ans = answers[start : start + batch_size]
        pro = [None] * len(ans) if prompts is None else prompts[start : start + batch_size]
        if getattr(tokenizer, "chat_template", None):
            convs = [
                ([{"role": "user", "content": p}] if p is not None else []) + [{"role": "assistant", "content": a}]
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


def tokenizer_for(model) -> tuple[object, int | None, str]:
    """(tokenizer, context length or None, name) for a tokenizer object or any model reference.

    A reference loads through :func:`ftkit.models.loading.load_tokenizer` (a chat template is not required: rows
    are then counted as ``prompt + "\\n\\n" + answer``); its context length is the catalog's, or what the model's
    config.json states (None when a hub model's config cannot be fetched).
    """
    if isinstance(model, (str, os.PathLike)):
        info = resolve_model(os.fspath(model))
        tok = load_tokenizer(info, require_chat_template=False)
        try:
            ctx = info.context_length
        except ModelConfigUnavailable:
            ctx = None
        return tok, ctx, os.fspath(model) if info.kind == "local" else info.name
    name = getattr(model, "name_or_path", "") or type(model).__name__
    config = Path(name) / "config.json" if name else None
    ctx = context_length_from_config(json.loads(config.read_text())) if config and config.is_file() else None
    limit = getattr(model, "model_max_length", None)
    if ctx is None and isinstance(limit, int) and 0 < limit < 10_000_000:  # huge values mean "not set"
        ctx = limit
    return model, ctx, str(name)
