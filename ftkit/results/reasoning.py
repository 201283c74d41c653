"""Decisions stated after a reasoning: generate up to a marker, then score the labels right after it.

A model trained on answers like ``"<conclusion>\\nAnswer: yes"`` (PubMedQA's ``reason`` style) first writes what the
abstract shows, then decides. Evaluation does the same: greedy generation from the prompt until the marker (or
``max_new_tokens``; a missing marker is appended), then one forward pass reads the next-token scores of the labels'
first tokens after it — the token training teaches there. The context is re-encoded exactly as training encodes
such a row (:func:`~ftkit.results.inference.encode_for_answer`), so the scored position matches training's.
"""

from __future__ import annotations

from ftkit.errors import UsageError
from ftkit.results.decoding import decode_rows, slots_supported
from ftkit.results.inference import (
    aligned_prefix,
    argmax_labels,
    contexts,
    encode_for_answer,
    eos_ids,
    left_pad,
    length_batches,
    model_device,
    next_token_logprobs,
)

REASON_TOKENS = 128  # default generation budget: PubMedQA conclusions are ~50 tokens (at most ~165)


def split_after_marker(tokenizer, prompt, reasoning: str, marker: str, label: str) -> tuple[list[int], int]:
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
    firsts = {label: split_after_marker(tokenizer, "?", "x", marker, label)[1] for label in labels}
    if len(set(firsts.values())) < len(firsts):
        raise UsageError(f"labels {list(labels)} start with the same token after {marker!r}; use distinct labels")
    return firsts


def marker_generation_config(model, tokenizer, marker: str, max_new_tokens: int):
    """``model.generate``'s greedy settings for writing up to the marker (the two-pass reference uses them)."""
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids(model, tokenizer),
        stop_strings=[marker],
    )


def reasoning_text(tokenizer, generated, marker: str) -> str:
    """The generated text before the marker, stripped: what the scored context re-encodes."""
    return tokenizer.decode(generated, skip_special_tokens=True).split(marker, 1)[0].strip()


def _marker_written(tokenizer, marker: str):
    """stop(generated): the marker has just been written (the text of the last few tokens holds it)."""
    tail = len(marker) + 1  # tokens that can hold it: each is at least one character

    def stop(generated: list[int]) -> bool:
        return marker in tokenizer.decode(generated[-tail:], skip_special_tokens=True)

    return stop


def _sharded(model) -> bool:
    """Whether ``model`` is FSDP-sharded over several processes (each forward gathers weights from all of them)."""
    import torch.distributed as dist
    from transformers.distributed.fsdp import is_fsdp_managed_module

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1 and is_fsdp_managed_module(model)


def score_after_reasoning(
    model, tokenizer, prompts, labels, marker: str, max_new_tokens: int = REASON_TOKENS, batch_size: int = 8
) -> tuple[list[str], list[list[float]], list[str]]:
    """(predicted labels, per-row log-probs of the labels, the generated reasoning) for each prompt.

    Rows are generated greedily up to the marker in slots that a row frees for the next one when it is done
    (:func:`ftkit.results.decoding.decode_rows`: at least ``batch_size`` slots, more where the KV cache budget allows),
    and scored by continuing their own KV cache: the prompt and the reasoning are not run through the model a second
    time (the scored context is still the re-encoded training row; only its tokens that differ from the generated
    ones are new). Same predictions as :func:`score_after_reasoning_twice` (benchmarks/reason_throughput.py compares
    them row by row), which runs instead under FSDP over several processes, where rows ending at different steps
    would leave the processes' collective forwards out of step, and for models the slots do not support
    (:func:`~ftkit.results.decoding.slots_supported`).
    """
    if _sharded(model) or not slots_supported(model):
        return score_after_reasoning_twice(model, tokenizer, prompts, labels, marker, max_new_tokens, batch_size)
    firsts = label_tokens_after(tokenizer, labels, marker)
    reasons = [""] * len(prompts)

    def readout(i: int, generated: list[int]) -> list[int]:
        reasons[i] = reasoning_text(tokenizer, generated, marker)
        return split_after_marker(tokenizer, prompts[i], reasons[i], marker, labels[0])[0]

    found = decode_rows(
        model,
        contexts(tokenizer, prompts),
        max_new_tokens=max_new_tokens,
        eos_ids=set(eos_ids(model, tokenizer)),
        pad_id=tokenizer.pad_token_id,
        stop=_marker_written(tokenizer, marker),
        readout=readout,
        wanted=[firsts[x] for x in labels],
        batch_size=batch_size,
    )
    logps = [row[1] for row in found]
    return argmax_labels(logps, labels), logps, reasons


def generate_reasoning(
    model, tokenizer, prompts, marker: str, max_new_tokens: int = REASON_TOKENS, batch_size: int = 8
):
    """The greedy text each prompt's answer starts with, up to (not including) the marker."""
    import torch

    cfg = marker_generation_config(model, tokenizer, marker, max_new_tokens)
    ctx = contexts(tokenizer, prompts)
    out = [""] * len(prompts)
    with torch.inference_mode():
        for idx in length_batches(ctx, batch_size):
            ids, mask, _ = left_pad([ctx[i] for i in idx], tokenizer.pad_token_id, model_device(model))
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, tokenizer=tokenizer)
            for row, i in enumerate(idx):
                out[i] = reasoning_text(tokenizer, gen[row, ids.shape[1] :], marker)
    return out


def score_after_reasoning_twice(
    model, tokenizer, prompts, labels, marker: str, max_new_tokens: int = REASON_TOKENS, batch_size: int = 8
) -> tuple[list[str], list[list[float]], list[str]]:
    """The reference implementation of :func:`score_after_reasoning`: generate, then score the re-encoded rows in a
    second full forward pass (kept for tests and the benchmark's before/after)."""
    tokens = label_tokens_after(tokenizer, labels, marker)
    reasons = generate_reasoning(model, tokenizer, prompts, marker, max_new_tokens, batch_size)
    scored = [split_after_marker(tokenizer, p, r, marker, labels[0])[0] for p, r in zip(prompts, reasons, strict=True)]
    logps = next_token_logprobs(model, tokenizer, scored, [tokens[x] for x in labels], batch_size)
    return argmax_labels(logps, labels), logps, reasons
