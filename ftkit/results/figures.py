"""Figures of evaluation results: the confusion matrix of one model (rows gold, columns predicted)."""

from __future__ import annotations

from ftkit.results.scores import EvalResult


def plot_confusion(result: EvalResult, ax=None, normalize: bool = False):
    """Draw the confusion matrix (rows gold, columns predicted) with counts in the cells; returns the axes.

    ``normalize=True`` colours and labels each gold row by its share (recall on the diagonal).
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(4, 3.5))
    gold = list(result.confusion)
    cols = list(result.confusion[gold[0]])
    counts = [[result.confusion[g][c] for c in cols] for g in gold]
    values = [[v / (sum(r) or 1) for v in r] for r in counts] if normalize else counts
    ax.imshow(values, cmap="Blues", vmin=0)
    top = max(max(r) for r in values) or 1
    for i, r in enumerate(values):
        for j, v in enumerate(r):
            text = f"{v:.0%}" if normalize else str(v)
            ax.text(j, i, text, ha="center", va="center", color="white" if v > top / 2 else "black")
    ax.set_xticks(range(len(cols)), cols)
    ax.set_yticks(range(len(gold)), gold)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(f"{result.model}: acc {result.accuracy:.2f}, macro-F1 {result.macro_f1:.2f}", fontsize=9)
    return ax
