"""The reason method as ftkit ran it before ftkit.results.decoding (commit 2d554ca), kept for reason_throughput.py's
before/after (verbatim but for the helpers' public names): ``model.generate`` on batches of 8 (every row stays in the
batch until the longest one ends), then the labels scored by continuing generation's KV cache."""

from __future__ import annotations

from ftkit.results.decoding import common_prefix as _common_prefix
from ftkit.results.inference import argmax_labels, contexts, left_pad, length_batches, model_device
from ftkit.results.reasoning import label_tokens_after, marker_generation_config, reasoning_text, split_after_marker


def score_after_reasoning_generate(model, tokenizer, prompts, labels, marker, max_new_tokens=128, batch_size=8):
    import torch

    firsts = label_tokens_after(tokenizer, labels, marker)
    wanted = [firsts[x] for x in labels]
    cfg = marker_generation_config(model, tokenizer, marker, max_new_tokens)
    cfg.return_dict_in_generate = True  # the sequences and the KV cache, to score from
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
                reasons[i] = reasoning_text(tokenizer, gen, marker)
                scored.append(split_after_marker(tokenizer, prompts[i], reasons[i], marker, labels[0])[0])
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            found = _scores_from_cache(
                model, cache, ids.shape[1], rows, generated, scored, wanted, tokenizer.pad_token_id
            )
            for i, row in zip(idx, found, strict=True):
                logps[i] = row
    return argmax_labels(logps, labels), logps, reasons


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
