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


def _generation_config(model, tokenizer, marker: str, max_new_tokens: int, with_cache: bool = False):
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    eos = {tokenizer.eos_token_id, getattr(model.generation_config, "eos_token_id", None)}
    return GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=sorted(e for e in eos if isinstance(e, int)),
        stop_strings=[marker],
        return_dict_in_generate=with_cache,  # the sequences and the KV cache, to score from
    )


def _reasoning(tokenizer, generated, marker: str) -> str:
    return tokenizer.decode(generated, skip_special_tokens=True).split(marker, 1)[0].strip()


def score_after_reasoning(
    model, tokenizer, prompts, labels, marker: str, max_new_tokens: int = REASON_TOKENS, batch_size: int = 8
) -> tuple[list[str], list[list[float]], list[str]]:
    """(predicted labels, per-row log-probs of the labels, the generated reasoning) for each prompt.

    Each batch is generated greedily up to the marker, then scored by continuing generation's KV cache: the prompt
    and the reasoning are not run through the model a second time (the scored context is still the re-encoded
    training row; only its tokens that differ from the generated ones are new). Same predictions as
    :func:`score_after_reasoning_twice`, about twice as fast (benchmarks/eval_throughput.py --method reason).
    """
    import torch

    firsts = label_tokens_after(tokenizer, labels, marker)
    wanted = [firsts[x] for x in labels]
    cfg = _generation_config(model, tokenizer, marker, max_new_tokens, with_cache=True)
    ctx = contexts(tokenizer, prompts)
    logps: list[list[float]] = [[]] * len(prompts)
    reasons = [""] * len(prompts)
    with torch.inference_mode():
        for idx in length_batches(ctx, batch_size):
            rows = [ctx[i] for i in idx]
            ids, mask, _ = left_pad(rows, tokenizer.pad_token_id, model_device(model))
            out = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, tokenizer=tokenizer)
            generated = [out.sequences[r, ids.shape[1] :].tolist() for r in range(len(idx))]
            scored = []
            for i, gen in zip(idx, generated, strict=True):
                reasons[i] = _reasoning(tokenizer, gen, marker)
                scored.append(_split_after_marker(tokenizer, prompts[i], reasons[i], marker, labels[0])[0])
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            found = _scores_from_cache(
                model, cache, ids.shape[1], rows, generated, scored, wanted, tokenizer.pad_token_id
            )
            for i, row in zip(idx, found, strict=True):
                logps[i] = row
    return argmax_labels(logps, labels), logps, reasons


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _scores_from_cache(model, cache, width: int, rows: list[list[int]], generated, scored, wanted, pad_id: int):
    """Next-token log-probs of ``wanted`` after each row's scoring context, continuing generation's KV cache.

    The cache holds each row's prompt (left padded to ``width``) and what it generated. Only the part of the scoring
    context that differs from what was generated (the marker appended or re-tokenised; at least its last token) is
    run through the model, attending to the cached prefix they share; the rest of the cache is masked out.
    """
    import torch

    cached = cache.get_seq_length()
    prefix, suffix = [], []
    for row, gen, ctx in zip(rows, generated, scored, strict=True):
        known = row + gen[: cached - width]  # tokens whose keys and values are in the cache
        c = min(_common_prefix(known, ctx), len(ctx) - 1)
        prefix.append(c)
        suffix.append(ctx[c:])
    n_new = max(len(s) for s in suffix)
    device = model_device(model)
    ids = torch.full((len(rows), n_new), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), cached + n_new), dtype=torch.long)
    pos = torch.zeros((len(rows), n_new), dtype=torch.long)
    for r, (row, c, s) in enumerate(zip(rows, prefix, suffix, strict=True)):
        start = width - len(row)  # the row's first cached position (after its left padding)
        mask[r, start : start + c] = 1
        ids[r, n_new - len(s) :] = torch.tensor(s)
        mask[r, cached + n_new - len(s) :] = 1
        pos[r, n_new - len(s) :] = torch.arange(c, c + len(s))
    logits = model(
        input_ids=ids.to(device),
        attention_mask=mask.to(device),
        position_ids=pos.to(device),
        cache=cache,
        logits_to_keep=1,
    ).logits[:, -1]
    return torch.log_softmax(logits.float(), dim=-1)[:, torch.tensor(wanted, device=logits.device)].cpu().tolist()


def generate_reasoning(
    model, tokenizer, prompts, marker: str, max_new_tokens: int = REASON_TOKENS, batch_size: int = 8
):
    """The greedy text each prompt's answer starts with, up to (not including) the marker."""
    import torch

    cfg = _generation_config(model, tokenizer, marker, max_new_tokens)
    ctx = contexts(tokenizer, prompts)
    out = [""] * len(prompts)
    with torch.inference_mode():
        for idx in length_batches(ctx, batch_size):
            ids, mask, _ = left_pad([ctx[i] for i in idx], tokenizer.pad_token_id, model_device(model))
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg, tokenizer=tokenizer)
            for row, i in enumerate(idx):
                out[i] = _reasoning(tokenizer, gen[row, ids.shape[1] :], marker)
    return out


def score_after_reasoning_twice(
    model, tokenizer, prompts, labels, marker: str, max_new_tokens: int = REASON_TOKENS, batch_size: int = 8
) -> tuple[list[str], list[list[float]], list[str]]:
    """The reference implementation of :func:`score_after_reasoning`: generate, then score the re-encoded rows in a
    second full forward pass (kept for tests and the benchmark's before/after)."""
    tokens = label_tokens_after(tokenizer, labels, marker)
    reasons = generate_reasoning(model, tokenizer, prompts, marker, max_new_tokens, batch_size)
    scored = [_split_after_marker(tokenizer, p, r, marker, labels[0])[0] for p, r in zip(prompts, reasons, strict=True)]
    logps = next_token_logprobs(model, tokenizer, scored, [tokens[x] for x in labels], batch_size)
    return argmax_labels(logps, labels), logps, reasons
