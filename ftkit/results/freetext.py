"""Evaluation of free-text answers (rows without decision labels): answer-token loss and exact match.

The loss is the mean negative log-likelihood of the reference answer's tokens after the prompt, encoded exactly
as training encodes a row (chat template, EOS trained, prompt masked); exact match compares the greedy answer with
the reference after lower-casing and collapsing white space.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

from ftkit.data.encoding import IGNORE, encode_row
from ftkit.results.inference import generate_texts


@dataclass
class TextEvalResult:
    """One model's answers to free-text rows: answer-token loss, perplexity and exact match."""

    model: str
    data: str
    n: int
    answer_loss: float  # mean NLL per reference answer token (nats)
    perplexity: float  # exp(answer_loss)
    exact_match: float  # share of rows whose greedy answer equals the reference (case and space ignored)
    answer_tokens: int
    seconds: float = 0.0
    predictions: dict[str, str] = field(default_factory=dict)  # id -> greedy answer
    rows: list[dict] = field(default_factory=list)
    predictions_path: str | None = None
    metrics_path: str | None = None
    method: str = "free-text"

    def to_dict(self, with_rows: bool = True) -> dict:
        d = asdict(self)
        d.pop("predictions")
        if not with_rows:
            d.pop("rows")
        return d

    def headline(self) -> str:
        return (
            f"answer-token loss {self.answer_loss:.4f} (perplexity {self.perplexity:.2f}, {self.answer_tokens} tokens)"
            f"  exact match {self.exact_match:.3f}  N={self.n}"
        )

    def __str__(self) -> str:
        lines = [f"{self.model} on {self.data} (free-text answers, {self.seconds:.1f} s)", self.headline()]
        if self.predictions_path:
            lines.append(f"answers: {self.predictions_path}  metrics: {self.metrics_path}")
        return "\n".join(lines)


def _normal(text: str) -> str:
    return " ".join(text.lower().split())


def answer_losses(model, tokenizer, prompts: list[str | None], answers: list[str], batch_size: int = 8):
    """(summed NLL, number of answer tokens) per row, teacher-forced on the reference answers."""
    import torch
    import torch.nn.functional as F

    encoded = [encode_row(tokenizer, p, a, mask_prompt=True) for p, a in zip(prompts, answers, strict=True)]
    device = next(model.parameters()).device
    out: list[tuple[float, int]] = []
    with torch.inference_mode():
        for s in range(0, len(encoded), batch_size):
            chunk = encoded[s : s + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.full((len(chunk), width), tokenizer.pad_token_id, dtype=torch.long)
            labels = torch.full((len(chunk), width), IGNORE, dtype=torch.long)
            mask = torch.zeros((len(chunk), width), dtype=torch.long)
            for i, (x, y) in enumerate(chunk):
                ids[i, : len(x)], labels[i, : len(y)], mask[i, : len(x)] = torch.tensor(x), torch.tensor(y), 1
            logits = model(input_ids=ids.to(device), attention_mask=mask.to(device)).logits[:, :-1].float()
            target = labels[:, 1:].to(device)
            nll = F.cross_entropy(logits.transpose(1, 2), target, ignore_index=IGNORE, reduction="none")
            for i in range(len(chunk)):
                out.append((float(nll[i].sum()), int((target[i] != IGNORE).sum())))
    return out


def evaluate_free_text(model, tokenizer, ids, prompts, answers, model_name: str, data: str, batch_size: int = 8):
    """A :class:`TextEvalResult` for rows ``ids`` with reference ``answers``."""
    import time

    start = time.perf_counter()
    losses = answer_losses(model, tokenizer, prompts, answers, batch_size)
    longest = max(len(tokenizer(a, add_special_tokens=False)["input_ids"]) for a in answers)
    texts = generate_texts(model, tokenizer, prompts, max_new_tokens=longest + 8, batch_size=batch_size)
    total, n_tok = sum(x for x, _ in losses), sum(n for _, n in losses)
    loss = total / max(n_tok, 1)
    rows = [
        {"id": i, "answer": a, "generated": t, "loss": round(x / max(n, 1), 4), "match": _normal(t) == _normal(a)}
        for i, a, t, (x, n) in zip(ids, answers, texts, losses, strict=True)
    ]
    return TextEvalResult(
        model=model_name,
        data=data,
        n=len(rows),
        answer_loss=loss,
        perplexity=math.exp(min(loss, 700)),
        exact_match=sum(r["match"] for r in rows) / max(len(rows), 1),
        answer_tokens=n_tok,
        seconds=round(time.perf_counter() - start, 3),
        predictions=dict(zip(ids, texts, strict=True)),
        rows=rows,
    )
