"""Greedy decoding of many rows at once, each row read out after a context of its own when it is done.

The engine behind the reason method (:mod:`ftkit.results.reasoning`). Rows are decoded in a fixed number of slots
that share one preallocated KV cache (:class:`SlotCache`): a row that is done frees its slot for the next row
(prefilled beforehand, a few rows per forward pass), so every step carries a full batch until the last rows, and no
step copies the cache. (``model.generate`` keeps a batch until its longest row ends, and transformers' dynamic
cache concatenates every layer's keys and values at every step, which at 32 rows costs more than the matmuls.)

When a row is done, the caller names the context to read it out after (for the reason method: the training row
re-encoded with the marker). Where that context differs from the tokens already fed, the differing cached columns
are masked out and its own tokens are fed, one per step with the row's true positions, so the logits returned are
the next-token logits after exactly that context: what a fresh forward pass over it gives, up to float rounding.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from ftkit.errors import UsageError
from ftkit.results.inference import left_pad, model_device

PREFILL_ROWS = 8  # rows prefilled in one forward pass: enough tokens for full-speed matmuls, bounded activations
CACHE_BYTES = 1 << 30  # the slots' KV cache: on a CPU, steps cost about the same from 32 rows on (the weights' reads
# are shared by more rows, the attention's are not); the bundled model fits ~35 PubMedQA rows in it


@dataclass
class _Row:
    index: int  # into the caller's contexts
    slot: int
    known: list[int]  # the tokens of the row's context so far, in order: their keys and values are in its slot
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


class SlotCache:
    """The keys and values of a fixed number of rows ("slots"), each row's tokens at the columns of its own slot.

    The decoder layers call it as they call a transformers cache (``update(keys, values, layer_idx)``), in steps
    that feed one token per slot: :meth:`advance` says where each slot's token goes and returns the attention mask
    (a 4-D boolean mask, which transformers passes to SDPA as it is). Capacity grows, by copying, when a row needs
    more columns than planned.
    """

    def __init__(self, prefill_cache, slots: int, capacity: int):
        import torch

        first = prefill_cache.layers[0].keys
        shape = (slots, first.shape[1], capacity, first.shape[3])
        self.keys = [first.new_zeros(shape) for _ in prefill_cache.layers]
        self.values = [first.new_zeros(shape) for _ in prefill_cache.layers]
        self.valid = torch.zeros((slots, capacity), dtype=torch.bool, device=first.device)
        self.used = [0] * slots  # columns written in each slot (masked-out ones included)
        self._at = self._width = None

    @property
    def slots(self) -> int:
        return len(self.used)

    def load(self, slot: int, prefill_cache, row: int, columns) -> None:
        """Put row ``row`` of a prefill into ``slot``: its tokens are at ``columns`` (a tensor, in order)."""
        n = len(columns)
        self._fit(n)
        for layer, src in enumerate(prefill_cache.layers):
            self.keys[layer][slot, :, :n] = src.keys[row][:, columns]
            self.values[layer][slot, :, :n] = src.values[row][:, columns]
        self.valid[slot] = False
        self.valid[slot, :n] = True
        self.used[slot] = n

    def clear(self, slot: int) -> None:
        """An empty slot: its steps write column 0 and attend to it alone (their output is not used)."""
        self.valid[slot] = False
        self.used[slot] = 0

    def forget(self, slot: int, column: int) -> None:
        """Mask out the slot's columns from ``column`` on: they are not in the row's context any more."""
        self.valid[slot, column:] = False

    def advance(self, busy: list[bool]):
        """Place the coming step's token of each slot (empty slots: column 0); the step's attention mask."""
        import torch

        columns = [u if b else 0 for u, b in zip(self.used, busy, strict=True)]
        self._fit(max(columns) + 1)
        self._width = max(columns) + 1
        self._at = (torch.arange(self.slots, device=self.valid.device), torch.tensor(columns, device=self.valid.device))
        self.valid[self._at] = True
        self.used = [c + 1 if b else 0 for c, b in zip(columns, busy, strict=True)]
        return self.valid[:, None, None, : self._width]

    def update(self, key_states, value_states, layer_idx: int, *args, **kwargs):
        """Write one layer's keys and values of this step's tokens; that layer's columns in use, to attend over."""
        slots, columns = self._at
        self.keys[layer_idx][slots, :, columns] = key_states[:, :, 0]
        self.values[layer_idx][slots, :, columns] = value_states[:, :, 0]
        return self.keys[layer_idx][:, :, : self._width], self.values[layer_idx][:, :, : self._width]

    def keep(self, slots: list[int]) -> None:
        """Only these slots, renumbered 0.. in this order (the others are empty)."""
        import torch

        at = torch.tensor(slots, device=self.valid.device)
        self.keys = [k.index_select(0, at) for k in self.keys]
        self.values = [v.index_select(0, at) for v in self.values]
        self.valid = self.valid.index_select(0, at)
        self.used = [self.used[s] for s in slots]

    def _fit(self, columns: int) -> None:
        import torch

        capacity = self.valid.shape[1]
        if columns <= capacity:
            return
        grow = max(columns, 2 * capacity) - capacity

        def pad(t):
            return torch.cat([t, t.new_zeros((*t.shape[:2], grow, t.shape[3]))], dim=2)

        self.keys = [pad(k) for k in self.keys]
        self.values = [pad(v) for v in self.values]
        self.valid = torch.cat([self.valid, self.valid.new_zeros((self.slots, grow))], dim=1)


def slots_supported(model) -> bool:
    """Whether :func:`decode_rows` can run ``model``: SDPA attention and a plain causal cache in every layer (no
    sliding-window or other special layers, whose masks the slots do not make)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    config = model.config
    if config._attn_implementation != "sdpa" or not getattr(config, "is_causal", True):
        return False
    return all(type(layer) is DynamicLayer for layer in DynamicCache(config=config).layers)


def planned_columns(contexts: list[list[int]], max_new_tokens: int) -> int:
    """The columns each slot starts with (a row that needs more grows them all)."""
    return max((len(c) for c in contexts), default=0) + max_new_tokens + 8


def slot_count(model, contexts: list[list[int]], max_new_tokens: int, batch_size: int) -> int:
    """Rows decoded together: ``batch_size``, or more where their KV cache fits in :data:`CACHE_BYTES`."""
    fits = CACHE_BYTES // (planned_columns(contexts, max_new_tokens) * kv_bytes_per_token(model))
    return min(max(batch_size, fits), len(contexts))


def kv_bytes_per_token(model) -> int:
    """The keys and values one token adds to the cache, all layers together."""
    c = model.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    heads = getattr(c, "num_key_value_heads", None) or c.num_attention_heads
    return 2 * c.num_hidden_layers * heads * head_dim * model.dtype.itemsize


def _cache_of(out):
    """The KV cache a forward pass returned (``cache`` in recent transformers, ``past_key_values`` before)."""
    return out.cache if getattr(out, "cache", None) is not None else out.past_key_values


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
    batch_size: int = 32,
) -> list[tuple[list[int], list[float]]]:
    """Greedy continuations of ``contexts``, each ended by EOS, ``stop(generated)`` or ``max_new_tokens``.

    Returns, per context, ``(generated, logprobs)``: the tokens generated (the ending one included) and the
    next-token log-probabilities (fp32) of the ``wanted`` tokens after ``readout(index, generated)``, a token list
    that starts with the row's context (it may differ from ``context + generated`` anywhere after that).
    Rows are taken longest first and decoded together in slots: ``batch_size`` of them, or more where their KV cache
    fits in :data:`CACHE_BYTES`. The model must pass :func:`slots_supported`.
    """
    import torch

    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    run = _Decoding(model, contexts, _Ending(max_new_tokens, eos_ids, stop, readout, wanted), pad_id, batch_size)
    with torch.inference_mode():
        run.loop()
    return run.results


class _Decoding:
    """One call of :func:`decode_rows`: the slots, their cache, the rows prefilled and the rows still waiting.

    Rows are prefilled :data:`PREFILL_ROWS` at a time (one row alone runs the matmuls ~15% slower) and wait,
    prefilled, for a slot. The tokens every context starts with (a chat template's system prompt) are run once.
    """

    def __init__(self, model, contexts, ending: _Ending, pad_id: int, batch_size: int):
        self.model, self.contexts, self.ending, self.pad_id = model, contexts, ending, pad_id
        self.device = model_device(model)
        self.results: list = [None] * len(contexts)
        self.waiting = deque(sorted(range(len(contexts)), key=lambda i: -len(contexts[i])))
        self.ready: deque = deque()  # prefilled rows: (index, prefill cache, its row there, columns, logits)
        self.capacity = planned_columns(contexts, ending.max_new_tokens)
        self.slots: list[_Row | None] = [None] * slot_count(model, contexts, ending.max_new_tokens, batch_size)
        self.cache: SlotCache | None = None
        shared = min((common_prefix(contexts[0], c) for c in contexts), default=0)
        self.prefix = min([shared] + [len(c) - 1 for c in contexts])  # each row keeps a token of its own
        self.prefix_cache = self._run_prefix() if self.prefix > 0 else None

    def loop(self) -> None:
        while True:
            self.fill()
            busy = [row for row in self.slots if row is not None]
            if not busy:
                return
            if not self.waiting and not self.ready and len(busy) <= len(self.slots) // 2:
                self.cache.keep([row.slot for row in busy])  # the last rows: steps without the empty slots
                for s, row in enumerate(busy):
                    row.slot = s
                self.slots = busy
            self.step(busy)

    def fill(self) -> None:
        """Give each free slot the next prefilled row (prefilling more as needed) and take its first token."""
        import torch

        started, logits = [], []
        for s, row in enumerate(self.slots):
            if row is not None:
                continue
            if not self.ready and self.waiting:
                self.prefill()
            if not self.ready:
                break
            i, prefill, j, columns, row_logits = self.ready.popleft()
            self.cache.load(s, prefill, j, columns)
            self.slots[s] = _Row(i, s, list(self.contexts[i]))
            started.append(self.slots[s])
            logits.append(row_logits)
        if started:
            self.take(started, torch.stack(logits))

    def prefill(self) -> None:
        """Run the next waiting rows' contexts (after the shared prefix) through the model together."""
        import torch

        group = [self.waiting.popleft() for _ in range(min(PREFILL_ROWS, len(self.waiting)))]
        p = self.prefix
        ids, mask, pos = left_pad([self.contexts[i][p:] for i in group], self.pad_id, self.device)
        cache = None
        if p:
            cache = self._prefix_for(len(group))
            mask = torch.cat([mask.new_ones((len(group), p)), mask], dim=1)
            pos = pos + p
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, cache=cache, use_cache=True, logits_to_keep=1
        )
        prefill = _cache_of(out)
        if self.cache is None:
            self.cache = SlotCache(prefill, len(self.slots), self.capacity)
        logits = out.logits[:, -1].float()
        width = mask.shape[1]
        for j, i in enumerate(group):
            start = width - (len(self.contexts[i]) - p)  # after the row's left padding
            columns = torch.cat([torch.arange(p), torch.arange(start, width)]).to(self.device)
            self.ready.append((i, prefill, j, columns, logits[j]))

    def _run_prefix(self):
        import torch

        ids = torch.tensor([self.contexts[0][: self.prefix]], device=self.device)
        out = self.model(input_ids=ids, use_cache=True, logits_to_keep=1)
        return _cache_of(out)

    def _prefix_for(self, rows: int):
        """A cache holding the shared prefix for ``rows`` rows."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for layer, src in enumerate(self.prefix_cache.layers):
            cache.update(src.keys.expand(rows, -1, -1, -1), src.values.expand(rows, -1, -1, -1), layer)
        return cache

    def step(self, busy: list[_Row]) -> None:
        """Feed every busy slot's next token (empty slots: padding, unused) and take the logits."""
        import torch

        ids = torch.tensor([[row.next if row else self.pad_id] for row in self.slots], device=self.device)
        pos = torch.tensor([[len(row.known) if row else 0] for row in self.slots], device=self.device)
        for row in busy:
            row.known.append(row.next)
        mask = self.cache.advance([row is not None for row in self.slots])
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=pos, cache=self.cache, use_cache=True, logits_to_keep=1
        )
        logits = out.logits[:, -1].float()
        self.take(busy, logits[torch.tensor([row.slot for row in busy], device=self.device)])

    def take(self, rows: list[_Row], logits) -> None:
        """Each row's logits: its next token, or the start or the end of its readout (which frees its slot)."""
        import torch

        picks = logits.argmax(-1).tolist()
        for row, pick, row_logits in zip(rows, picks, logits, strict=True):
            if row.feed is None:
                row.generated.append(pick)
                if self._done(row.generated):
                    target = self.ending.readout(row.index, row.generated)
                    shared = min(common_prefix(row.known, target), len(target) - 1)
                    self.cache.forget(row.slot, shared)  # row.known[k] is at column k until the readout starts
                    row.known, row.feed = row.known[:shared], target[shared:]
                else:
                    row.next = pick
            if row.feed is not None:
                if not row.feed:  # the whole readout context is in: these logits are the answer
                    wanted = torch.tensor(self.ending.wanted, device=logits.device)
                    self.results[row.index] = (row.generated, torch.log_softmax(row_logits, -1)[wanted].tolist())
                    self.slots[row.slot] = None
                    self.cache.clear(row.slot)
                    continue
                row.next = row.feed.pop(0)

    def _done(self, generated: list[int]) -> bool:
        e = self.ending
        return generated[-1] in e.eos_ids or len(generated) >= e.max_new_tokens or e.stop(generated)
