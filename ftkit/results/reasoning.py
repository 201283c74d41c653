"""Decisions stated after a reasoning: generate up to a marker, then score the labels right after it.

A model trained on answers like ``"<conclusion>\\nAnswer: yes"`` (PubMedQA's ``reason`` style) first writes what the
abstract shows, then decides. Evaluation does the same: greedy generation from the prompt until the marker (or
``max_new_tokens``; a missing marker is appended), then one forward pass reads the next-token scores of the labels'
first tokens after it — the token training teaches there. The context is re-encoded exactly as training encodes
such a row (:func:`~ftkit.results.inference.encode_for_answer`), so the scored position matches training's.
"""

from __future__ import annotations

from ftkit.errors import UsageError
from ftkit.results.inference import (
    aligned_prefix,
    argmax_labels,
    contexts,
    encode_for_answer,
    left_pad,
    length_batches,
    model_device,
    next_token_logprobs,
)

REASON_TOKENS = 128  # default generation budget: PubMedQA conclusions are ~50 tokens (at most ~165)


def _split_after_marker(tokenizer, prompt, reasoning: str, marker: str, label: str) -> tuple[list[int], int]:
    """(token ids up to and including the marker, id of the label's first token after it) for one row."""
    head = f"{reasoning}\n{marker}" if reasoning else marker
    ctx, answer = encode_for_answer(tokenizer, prompt, f"{head} {label}")
    k = aligned_prefix(tokenizer, answer, head)
    if k < 0 or k >= len(answer):
        raise UsageError(
            f"the marker {marker!r} and the label {label!r} share a token, so no single position predicts the label; "
            "use a marker that ends the text before the label (e.g. 'Answer:')"
        )
    return ctx + answer[:k], answer[k]


def label_tokens_after(tokenizer, labels, marker: str) -> dict[str, int]:
    """The first token of each label where it follows the marker; labels must start with distinct tokens."""
    firsts = {label: _split_after_marker(tokenizer, "?", "x", marker, label)[1] for label in labels}
    if len(set(firsts.values())) < len(firsts):
        raise UsageError(f"labels {list(labels)} start with the same token after {marker!r}; use distinct labels")
    return firsts


def generate_reasoning(
    model, tokenizer, prompts, marker: str, max_new_tokens: int = REASON_TOKENS, batch_size: int = 8
):
    """The greedy text each prompt's answer starts with, up to (not including) the marker."""
    import torch
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ctx = contexts(tokenizer, prompts)
    eos = {tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)}
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted(e for e in eos if isinstance(e, int)),
        stop_strings=[marker],
    )
    out = [""] * len(prompts)
    with torch.inference_mode():
        for idx in length_batches(ctx, batch_size):
            ids, mask, _ = left_pad([ctx[i] for i in idx], tokenizer.pad_token_id, model_device(model))
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, tokenizer=tokenizer)
            for row, i in enumerate(idx):
                text = tokenizer.decode(gen[row, ids.shape[1] :], skip_special_tokens=True)
                out[i] = text.split(marker, 1)[0].strip()
    return out


def score_after_reasoning(
    model, tokenizer, prompts, labels, marker: str, max_new_tokens: int = REASON_TOKENS, batch_size: int = 8
) -> tuple[list[str], list[list[float]], list[str]]:
    """(predicted labels, per-row log-probs of the labels, the generated reasoning) for each prompt."""
    tokens = label_tokens_after(tokenizer, labels, marker)
    reasons = generate_reasoning(model, tokenizer, prompts, marker, max_new_tokens, batch_size)
    scored = [_split_after_marker(tokenizer, p, r, marker, labels[0])[0] for p, r in zip(prompts, reasons, strict=True)]
    logps = next_token_logprobs(model, tokenizer, scored, [tokens[x] for x in labels], batch_size)
    return argmax_labels(logps, labels), logps, reasons
