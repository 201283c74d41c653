"""PubMedQA rows in the fine-tuning service's format, and deterministic stratified splits.

A row is ``pmid, prompt, answer, final_decision``: the prompt is the question, the abstract's sections under
``Context:`` and an instruction; the answer starts with the decision word (evaluation reads it from the first answer
token). Splits depend only on the ids, labels and seed, never on the order of the source file.
"""

from __future__ import annotations

import random

from ftkit.errors import UsageError

DECISIONS = ("yes", "no", "maybe")
ANSWER_STYLES = ("decision", "decision_long", "long", "reason")
# reason: the conclusion first, then the decision after this marker ("<conclusion>\nAnswer: yes"): the model states
# what the abstract shows before it decides, and evaluation reads the decision after the marker it generates.
REASON_MARKER = "Answer:"
# Which abstract sections a prompt shows: all of them, or only the results (the sections whose label names results
# or findings; the last section when none does) — about half the tokens, and the part that holds the evidence.
CONTEXTS = ("all", "results")
COLUMNS = ("pmid", "prompt", "answer", "final_decision")

# The instruction closing each prompt tells the model the shape of answer the chosen style trains it to give.
INSTRUCTIONS = {
    "decision": "Answer with one word: yes, no or maybe.",
    "decision_long": "Answer yes, no or maybe, then give the conclusion that supports your answer.",
    "long": "Answer with the conclusion that the abstract supports.",
    "reason": f"State the conclusion that the abstract supports, then answer yes, no or maybe after '{REASON_MARKER}'.",
}
# Section labels that carry no information; their text is shown without a label.
_NO_LABEL = {"", "UNLABELLED", "UNLABELED", "NONE"}


def check_answer_style(answer_style: str) -> str:
    if answer_style not in ANSWER_STYLES:
        raise UsageError(f"answer_style must be one of {ANSWER_STYLES}, got {answer_style!r}")
    return answer_style


def check_context(context: str) -> str:
    if context not in CONTEXTS:
        raise UsageError(f"context must be one of {CONTEXTS}, got {context!r}")
    return context


def results_sections(contexts: list[str], labels: list[str]) -> tuple[list[str], list[str]]:
    """The sections labelled as results or findings (e.g. RESULTS, MEASUREMENTS AND MAIN RESULTS); the last
    section when no label says so (PQA-L: 971 of 1000 abstracts have one, and it is the last section in 921)."""
    labels = [str(x or "") for x in labels] + [""] * (len(contexts) - len(labels))
    keep = [i for i, x in enumerate(labels[: len(contexts)]) if "RESULT" in x.upper() or "FINDING" in x.upper()]
    keep = keep or [len(contexts) - 1]
    return [contexts[i] for i in keep], [labels[i] for i in keep]


def format_prompt(question: str, contexts: list[str], labels: list[str], answer_style: str, context="all") -> str:
    """The question, the abstract's sections (all, or the results only) as ``LABEL: text`` lines under
    ``Context:``, the instruction."""
    if check_context(context) == "results" and contexts:
        contexts, labels = results_sections(list(contexts), list(labels))
    lines = [f"Question: {question.strip()}", "", "Context:"]
    for i, text in enumerate(contexts):
        label = str(labels[i]).strip().upper() if i < len(labels) and labels[i] is not None else ""
        text = " ".join(str(text).split())
        lines.append(text if label in _NO_LABEL else f"{label}: {text}")
    lines += ["", INSTRUCTIONS[answer_style]]
    return "\n".join(lines)


def format_answer(decision: str | None, long_answer: str, answer_style: str) -> str:
    """The decision word first (evaluation reads it from the first answer token), then the long answer; or, for
    ``reason``, the long answer first and the decision after :data:`REASON_MARKER`."""
    long_answer = " ".join(str(long_answer).split())
    if answer_style == "long":
        return long_answer
    if decision not in DECISIONS:
        raise UsageError(f"decision must be one of {DECISIONS}, got {decision!r}")
    if answer_style == "reason":
        return f"{long_answer}\n{REASON_MARKER} {decision}"
    return decision if answer_style == "decision" else f"{decision}. {long_answer}"


def to_row(pmid: str, record: dict, answer_style: str, context: str = "all") -> dict[str, str]:
    """One ``ori_pqal.json`` record as a CSV row (pmid, prompt, answer, final_decision)."""
    decision = record.get("final_decision")
    return {
        "pmid": str(pmid),
        "prompt": format_prompt(record["QUESTION"], record["CONTEXTS"], record["LABELS"], answer_style, context),
        "answer": format_answer(decision, record["LONG_ANSWER"], answer_style),
        "final_decision": decision or "",
    }


def allocate(counts: dict[str, int], n: int) -> dict[str, int]:
    """Split ``n`` over labels in proportion to ``counts`` (largest remainder; ties by size, then label)."""
    total = sum(counts.values())
    n = min(n, total)
    if total == 0:
        return dict.fromkeys(counts, 0)
    exact = {k: n * c / total for k, c in counts.items()}
    out = {k: int(v) for k, v in exact.items()}
    order = sorted(counts, key=lambda k: (-(exact[k] - out[k]), -counts[k], k))
    for k in order[: n - sum(out.values())]:
        out[k] += 1
    return out


def stratified_take(ids_by_label: dict[str, list[str]], n: int, seed: int, key: str) -> tuple[list[str], list[str]]:
    """Pick ``n`` ids keeping label proportions; returns (picked, rest), both in a deterministic order.

    Each label's ids are sorted numerically, then shuffled by an RNG seeded from (seed, key, label), so the
    pick depends only on those and the ids, not on the order of the source file.
    """
    sizes = allocate({k: len(v) for k, v in ids_by_label.items()}, n)
    picked: list[str] = []
    rest: list[str] = []
    for label in sorted(ids_by_label):
        ids = sorted(ids_by_label[label], key=_pmid_key)
        random.Random(f"{seed}/{key}/{label}").shuffle(ids)
        picked += ids[: sizes[label]]
        rest += ids[sizes[label] :]
    return picked, rest


def _pmid_key(pmid: str):
    return (0, int(pmid), "") if str(pmid).isdigit() else (1, 0, str(pmid))


def _by_label(ids: list[str], label_of: dict[str, str]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for i in ids:
        out.setdefault(label_of[i], []).append(i)
    return out


def split_ids(
    label_of: dict[str, str],
    test_ids: list[str] | None,
    seed: int,
    n_validation: int,
    max_train: int | None = None,
    max_validation: int | None = None,
    max_test: int | None = None,
) -> dict[str, list[str]]:
    """Split ids into train/validation(/test). Train comes out shuffled; validation and test in PMID order."""
    test = list(test_ids) if test_ids is not None else []
    test_set = set(test)
    rest = [i for i in label_of if i not in test_set]
    validation, train = stratified_take(_by_label(rest, label_of), n_validation, seed, "validation")
    splits = {"train": train, "validation": validation}
    if test_ids is not None:
        splits["test"] = test
    for name, limit in (("train", max_train), ("validation", max_validation), ("test", max_test)):
        if name in splits and limit is not None:
            if limit < 0:
                raise UsageError(f"max_{name} must be >= 0, got {limit}")
            splits[name] = stratified_take(_by_label(splits[name], label_of), limit, seed, f"subsample-{name}")[0]
    splits["train"].sort(key=_pmid_key)
    random.Random(f"{seed}/train-order").shuffle(splits["train"])
    for name in ("validation", "test"):
        if name in splits:
            splits[name].sort(key=_pmid_key)
    return splits
