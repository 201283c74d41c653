"""The two fields the docs' example body uses but its field list does not define, read as documented fields.

``evaluation_epochs = k`` is read as ``n_evals = n_epochs // k``; ``warmup_epochs = w`` as
``warmup_ratio = min(w / n_epochs, 1)``. Given together with the field they set, the two must agree.
"""

from __future__ import annotations

ALIAS_OF = {"n_evals": "evaluation_epochs", "warmup_ratio": "warmup_epochs"}


def alias_mapping(n_epochs: int, evaluation_epochs: int | None, warmup_epochs: float | None):
    """(field, value, explanation) for each undocumented alias given: what it means in documented fields."""
    out = []
    if evaluation_epochs is not None:
        n = n_epochs // evaluation_epochs if evaluation_epochs else 0
        out.append(
            (
                "n_evals",
                n,
                f"evaluation_epochs={evaluation_epochs} (one evaluation every "
                f"{evaluation_epochs} epoch(s)) is read as n_evals = n_epochs // "
                f"{evaluation_epochs} = {n}"
                if evaluation_epochs
                else "evaluation_epochs=0 is read as n_evals = 0 (no evaluation)",
            )
        )
    if warmup_epochs is not None:
        ratio = min(warmup_epochs / n_epochs, 1.0)
        out.append(
            (
                "warmup_ratio",
                ratio,
                f"warmup_epochs={warmup_epochs:g} is read as warmup_ratio = "
                f"min({warmup_epochs:g} / n_epochs={n_epochs}, 1) = {ratio:g}",
            )
        )
    return out


def same(a: float, b: float) -> bool:
    """Equal up to float rounding (an alias's computed ratio against the value a user wrote)."""
    return abs(float(a) - float(b)) <= 1e-9 * max(1.0, abs(float(b)))


def conflict_message(field: str, hp) -> str:
    """Why ``field`` and its alias in the hyperparameters ``hp`` disagree, and what to do."""
    expl = next(e for f, _, e in alias_mapping(hp.n_epochs, hp.evaluation_epochs, hp.warmup_epochs) if f == field)
    given = getattr(hp, field)
    return f"{expl}, but {field} is {given}: give only one of {ALIAS_OF[field]} and {field}, or make them agree"
