"""Greedy decoding of many rows at once, each row read out after a context of its own when it is done.

The engine behind the reason method (:mod:`ftkit.results.reasoning`). ``model.generate`` keeps every row of a batch
until the longest one ends, feeding finished rows padding; here a row that is done leaves the batch and its KV cache
(which transformers' dynamic cache copies whole at every step), so later steps carry only the rows still writing.
When a row is done, the caller names the context to read it out after (for the reason method: the training row
re-encoded with the marker). Where that context differs from the tokens already fed, the differing cached positions
are masked out and its own tokens are fed, one per step with the row's true positions, so the logits returned are
the next-token logits after exactly that context: what a fresh forward pass over it gives, up to float rounding.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from ftkit.errors import UsageError
from ftkit.results.inference import left_pad, length_batches, model_device


@dataclass
class _Row:
    index: int  # into the caller's contexts
    start: int  # the cache column of the row's first token (after its left padding)
    known: list[int]  # the tokens fed so far, in order: their keys and values are in the cache
    generated: list[int] = field(default_factory=list)
    feed: list[int] | None = None  # once done: the readout context's tokens still to feed
    next: int = 0  # the token fed at the coming step


@dataclass
class _Ending:
    """When a row is done and what is read out of it."""

    max_new_tokens: int
    eos_ids: set[int]
    stop: Callable[[list[int]], bool]
    readout: Callable[[int, list[int]], list[int]]
    wanted: list[int]


def common_prefix(a: list[int], b: list[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def decode_rows(
    model,
    contexts: list[list[int]],
    *,
    max_new_tokens: int,
    eos_ids: set[int],
    pad_id: int,
    stop: Callable[[list[int]], bool],
    readout: Callable[[int, list[int]], list[int]],
    wanted: list[int],
    batch_size: int = 8,
) -> list[tuple[list[int], list[float]]]:
    """Greedy continuations of ``contexts``, each ended by EOS, ``stop(generated)`` or ``max_new_tokens``.

    Returns, per context, ``(generated, logprobs)``: the tokens generated (the ending one included) and the
    next-token log-probabilities (fp32) of the ``wanted`` tokens after ``readout(index, generated)``, a token list
    that starts with the row's context (it may differ from ``context + generated`` anywhere after that).
    Rows are prefilled and decoded ``batch_size`` at a time, longest first.
    """
    import torch

    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ending = _Ending(max_new_tokens, eos_ids, stop, readout, wanted)
    results: list = [None] * len(contexts)
    device = model_device(model)
    with torch.inference_mode():
        for idx in length_batches(contexts, batch_size):
            ids, mask, pos = left_pad([contexts[i] for i in idx], pad_id, device)
            out = model(input_ids=ids, attention_mask=mask, position_ids=pos, use_cache=True, logits_to_keep=1)
            cache = out.cache if getattr(out, "cache", None) is not None else out.past_key_values
            rows = [_Row(i, ids.shape[1] - len(contexts[i]), list(contexts[i])) for i in idx]
            logits = out.logits[:, -1].float()
            while True:
                rows, keep = _advance(rows, logits, mask, results, ending)
                if not rows:
                    break
                if len(keep) < mask.shape[0]:  # rows that are done leave the batch and its cache
                    at = torch.tensor(keep, device=device)
                    cache.batch_select_indices(at)
                    mask = mask[at]
                logits, mask = _step(model, rows, mask, cache)
    return results


def _step(model, rows: list[_Row], mask, cache):
    """Feed each row's next token; the next-token logits and the attention mask grown by one column."""
    import torch

    device = mask.device
    mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
    ids = torch.tensor([[r.next] for r in rows], device=device)
    pos = torch.tensor([[len(r.known)] for r in rows], device=device)  # the row's own count, padding not counted
    for r in rows:
        r.known.append(r.next)
    out = model(input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1)
    return out.logits[:, -1].float(), mask


def _advance(rows: list[_Row], logits, mask, results, ending: _Ending):
    """Take one step's logits: pick each row's next token, or start or finish its readout.

    Returns the rows still running and their indexes in ``rows`` (the batch positions to keep). ``mask`` is
    changed in place where a readout context masks out cached tokens.
    """
    import torch

    picks = logits.argmax(-1).tolist()
    running, keep = [], []
    for b, row in enumerate(rows):
        if row.feed is None:
            token = picks[b]
            row.generated.append(token)
            if token in ending.eos_ids or len(row.generated) >= ending.max_new_tokens or ending.stop(row.generated):
                target = ending.readout(row.index, row.generated)
                shared = min(common_prefix(row.known, target), len(target) - 1)
                mask[b, row.start + shared :] = 0  # cached tokens past the shared part are not in the context
                row.known, row.feed = row.known[:shared], target[shared:]
            else:
                row.next = token
        if row.feed is not None:
            if not row.feed:  # the whole readout context is in: these logits are the answer
                logps = torch.log_softmax(logits[b], dim=-1)[torch.tensor(ending.wanted, device=logits.device)]
                results[row.index] = (row.generated, logps.tolist())
                continue
            row.next = row.feed.pop(0)
        running.append(row)
        keep.append(b)
    return running, keep
