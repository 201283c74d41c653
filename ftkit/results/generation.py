"""Try a model: greedy answers to your own prompts, and a few answers next to a data file's gold decisions."""

from __future__ import annotations

import os

from ftkit.results.evaluation import read_eval_data
from ftkit.results.inference import DECISIONS, generate_texts, load_for_inference, parse_decision


def generate(
    model_ref_or_loaded,
    prompts: str | list[str],
    max_new_tokens: int = 64,
    device: str = "auto",
    batch_size: int = 8,
    jobs_dir: str | os.PathLike | None = None,
) -> list[str]:
    """Greedy answers to ``prompts`` through the model's chat template (each prompt is one user turn).

    ``model_ref_or_loaded`` is a job id or folder, an export archive, a model reference, or a
    ``(model, tokenizer)`` pair from :func:`ftkit.load_for_inference` (load once, ask many times).
    A single prompt string gives a one-element list.
    """

    if isinstance(prompts, str):
        prompts = [prompts]
    if not prompts:
        return []
    model, tok = load_for_inference(model_ref_or_loaded, device, jobs_dir)
    return generate_texts(model, tok, list(prompts), max_new_tokens, batch_size)


def _question(prompt: str, width: int) -> str:
    """The ``Question:`` line of a PubMedQA prompt (else the prompt's start), cut to ``width`` characters."""
    first = next((ln for ln in prompt.splitlines() if ln.startswith("Question:")), prompt)
    text = " ".join(first.removeprefix("Question:").split())
    return text if len(text) <= width else text[: width - 1] + "…"


def sample_answers(
    model_ref,
    data: str | os.PathLike = "test.csv",
    n: int = 3,
    max_new_tokens: int = 160,
    device: str = "auto",
    width: int = 100,
    jobs_dir: str | os.PathLike | None = None,
):
    """A pandas DataFrame of ``n`` rows of ``data`` (taking the labels in turn: yes, no, maybe, yes, ...) with
    the question excerpt, the gold decision, the model's answer and the decision parsed from it."""
    import pandas as pd

    rows = read_eval_data(data)
    by_label = {label: [r for r in rows if r.gold == label] for label in DECISIONS}
    picked = []
    while len(picked) < min(n, len(rows)):
        for label in DECISIONS:
            if by_label[label] and len(picked) < n:
                picked.append(by_label[label].pop(0))
    answers = generate(model_ref, [r.prompt for r in picked], max_new_tokens, device, jobs_dir=jobs_dir)
    return pd.DataFrame(
        {
            "pmid": [r.id for r in picked],
            "question": [_question(r.prompt, width) for r in picked],
            "gold": [r.gold for r in picked],
            "answer": answers,
            "parsed": [parse_decision(a) or "unparsed" for a in answers],
        }
    )
