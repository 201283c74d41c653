"""Turn prompt/answer rows into training examples through the model's chat template.

Each row becomes ``user = prompt, assistant = answer`` (just the assistant turn when there is no prompt column),
ending with the model's EOS token, which is always trained. With ``mask_prompt_labels`` every token before the answer
gets label -100. Truncation to ``max_seq_length`` is counted and reported, never silent.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ftkit.errors import FtkitError

IGNORE = -100


class ChatTemplateError(FtkitError, ValueError):
    """A chat template that does not render a row's answer where ftkit can find it."""


@dataclass
class Encoded:
    """Token ids and labels of a set of rows, plus what the caller must report."""

    examples: list[dict]  # {"input_ids": [...], "labels": [...]}
    truncated_rows: list[int] = field(default_factory=list)  # 0-based row indexes longer than max_seq_length
    answer_cut_rows: list[int] = field(default_factory=list)  # of those, rows whose answer had to be cut too
    max_seq_length: int = 0

    @property
    def n_tokens(self) -> int:
        return sum(len(e["input_ids"]) for e in self.examples)

    @property
    def n_trained_tokens(self) -> int:
        """Tokens that are prediction targets (the first token of a sequence never is)."""
        return sum(sum(1 for t in e["labels"][1:] if t != IGNORE) for e in self.examples)

    def summary(self) -> str:
        n = len(self.examples)
        s = f"{n} rows, {self.n_tokens} tokens ({self.n_trained_tokens} trained)"
        if self.truncated_rows:
            s += (
                f"; {len(self.truncated_rows)} rows truncated to max_seq_length={self.max_seq_length} "
                f"(first rows: {[r + 1 for r in self.truncated_rows[:5]]}): prompts shortened from the end so the "
                f"answer stays whole"
            )
            if self.answer_cut_rows:
                s += f", but {len(self.answer_cut_rows)} answers were cut too"
            s += "; raise local.max_seq_length to keep rows whole"
        return s


def split_chat_text(tokenizer, prompt: str | None, answer: str) -> tuple[str, str]:
    """Render one row with the chat template and split it into (text before the answer, answer text + end).

    The split is found by rendering the same conversation with the generation prompt and no answer, so it holds for
    any template that renders earlier turns identically (all common chat templates do).
    """
    user = [{"role": "user", "content": prompt}] if prompt is not None else []
    full = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": answer}], tokenize=False)
    if user:
        head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        if full.startswith(head):
            return head, full[len(head) :]
    # answer-only rows, or templates whose generation prompt differs from the rendered assistant header
    at = full.rfind(answer) if answer else -1
    if at < 0:
        raise ChatTemplateError(
            "the chat template does not contain the answer text verbatim; cannot find where it starts"
        )
    return full[:at], full[at:]


def encode_row(tokenizer, prompt: str | None, answer: str, mask_prompt: bool) -> tuple[list[int], list[int]]:
    """Token ids and labels of one row, ending exactly at (and including) the EOS token."""
    head, tail = split_chat_text(tokenizer, prompt, answer)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    eos = tokenizer.eos_token_id
    # Templates end a turn with EOS plus a newline or similar; training stops at the EOS so generation learns to stop.
    if eos in tail_ids:
        tail_ids = tail_ids[: len(tail_ids) - tail_ids[::-1].index(eos)]
    else:
        tail_ids = tail_ids + [eos]
    ids = head_ids + tail_ids
    labels = ([IGNORE] * len(head_ids) if mask_prompt else list(head_ids)) + list(tail_ids)
    return ids, labels


def encode_rows(
    tokenizer,
    prompts: list[str] | None,
    answers: list[str],
    max_seq_length: int,
    mask_prompt: bool = False,
) -> Encoded:
    """Encode every row; rows longer than ``max_seq_length`` are cut at the end and listed in ``truncated_rows``."""
    out = Encoded(examples=[], max_seq_length=max_seq_length)
    for i, answer in enumerate(answers):
        prompt = None if prompts is None else prompts[i]
        ids, labels = encode_row(tokenizer, prompt, answer, mask_prompt)
        if len(ids) > max_seq_length:
            out.truncated_rows.append(i)
            if prompt:
                ids, labels = _shorten_prompt(tokenizer, prompt, answer, mask_prompt, max_seq_length, len(ids))
            if len(ids) > max_seq_length:
                out.answer_cut_rows.append(i)
                ids, labels = ids[:max_seq_length], labels[:max_seq_length]
        out.examples.append({"input_ids": ids, "labels": labels})
    return out


def _shorten_prompt(tokenizer, prompt, answer, mask_prompt, max_len, length):
    """Cut the end of the prompt text until the row fits: a truncated answer would teach the wrong thing
    (for PubMedQA, the decision word comes first in the answer, and the question first in the prompt)."""
    p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    ids, labels = [], []
    for _ in range(4):  # re-tokenising the shortened text can shift a token or two
        keep = len(p_ids) - (length - max_len) - 1
        if keep <= 0:
            break
        p_ids = p_ids[:keep]
        ids, labels = encode_row(tokenizer, tokenizer.decode(p_ids) + " ...", answer, mask_prompt)
        length = len(ids)
        if length <= max_len:
            break
    return (ids, labels) if ids else encode_row(tokenizer, prompt, answer, mask_prompt)


def padded_collator(tokenizer):
    """Dynamic padding to the longest row of each batch; padded positions get label -100 and attention 0."""
    from transformers import DataCollatorForSeq2Seq

    return DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=IGNORE, return_tensors="pt")


def padding_free_collator():
    """Concatenate a batch into one row with per-example position ids: no padding at all.

    transformers derives a block-diagonal attention mask from the restarting position ids, so examples never
    attend to each other (tests/test_encoding.py checks the logits against one-by-one forwards).
    """
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE)


def collator_for(batching: str, tokenizer, weighted: bool = False):
    """The collator of a batching mode: "padding_free" or "padded"; ``weighted`` adds per-token row weights."""
    base = padding_free_collator() if batching == "padding_free" else padded_collator(tokenizer)
    return RowWeights(base) if weighted else base


class RowWeights:
    """Wraps a collator for examples that carry a ``weight`` (a loss weight per row, e.g. class balancing): the
    batch gets ``token_weights`` shaped like its labels, each token weighted by its row (padding 0)."""

    def __init__(self, collate):
        self.collate = collate

    def __call__(self, features: list[dict]) -> dict:
        import torch

        weights = [float(f.get("weight", 1.0)) for f in features]
        batch = self.collate([{k: v for k, v in f.items() if k != "weight"} for f in features])
        lengths = [len(f["input_ids"]) for f in features]
        if batch["labels"].shape[0] == len(features):  # padded: each row's real tokens are where its mask is 1
            mask = batch["attention_mask"].bool()
            tw = torch.zeros(batch["labels"].shape, dtype=torch.float32)
            for i, w in enumerate(weights):
                tw[i, mask[i]] = w
        else:  # padding-free: one row of the examples in order
            tw = torch.cat([torch.full((n,), w) for n, w in zip(lengths, weights, strict=True)])[None]
        batch["token_weights"] = tw
        return batch
