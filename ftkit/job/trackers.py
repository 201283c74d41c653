"""The experiment trackers a job may report to (``local.report_to``) and whether each one's package is installed,
checked when the job is read so that a missing package is named before any model loads."""

from __future__ import annotations

import importlib.util

# tracker -> (modules any one of which provides it, the install command that brings it)
TRACKERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "pip install 'ftkit[trackers]'"),
    "mlflow": (("mlflow",), "pip install 'ftkit[trackers]'"),
    "wandb": (("wandb",), "pip install wandb"),
    "trackio": (("trackio",), "pip install trackio"),
}
NO_TRACKER = "none"


def installed(tracker: str) -> bool:
    """Whether the package of ``tracker`` can be imported here (looked up, not imported: no torch, no startup)."""
    return any(importlib.util.find_spec(m) is not None for m in TRACKERS[tracker][0])


def missing_message(trackers: list[str]) -> str | None:
    """What to install for the trackers among ``trackers`` whose package is missing, or None when all are here."""
    missing = [t for t in trackers if t in TRACKERS and not installed(t)]
    if not missing:
        return None
    commands = sorted({TRACKERS[t][1] for t in missing})
    return f"{', '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed: {' and '.join(commands)}"
