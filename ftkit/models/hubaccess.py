"""Whether a Hugging Face Hub model can be loaded here: from the local Hugging Face cache, or from the Hub when it
can be reached. The Hub is asked once per process, within seconds; left alone, huggingface_hub retries an unreachable
Hub for about a minute per file and transformers then ends in a long traceback."""

from __future__ import annotations

import functools
import os

from ftkit.errors import FtkitError

REACH_TIMEOUT_S = 5.0
_TRUE = {"1", "ON", "YES", "TRUE"}


class HubUnreachable(FtkitError, ConnectionError):
    """A Hub model that is not in the local cache, while the Hub cannot be reached (offline)."""


def endpoint() -> str:
    from huggingface_hub import constants

    return (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")


def offline_mode() -> bool:
    """Whether huggingface_hub is told to stay offline (``HF_HUB_OFFLINE``)."""
    from huggingface_hub import constants

    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in _TRUE or bool(constants.HF_HUB_OFFLINE)


@functools.cache
def _reach(url: str, offline: bool) -> str | None:
    if offline:
        return "HF_HUB_OFFLINE is set"
    from huggingface_hub.utils import get_session

    try:
        get_session().head(url, timeout=REACH_TIMEOUT_S)
    except Exception as e:  # httpx and requests raise different connection errors across huggingface_hub versions
        return f"{type(e).__name__}: {' '.join(str(e).split())}"
    return None


def hub_problem() -> str | None:
    """Why the Hub cannot be reached (offline mode, no route, DNS), or None when it answers; asked once."""
    return _reach(endpoint(), offline_mode())


def is_cached(repo: str) -> bool:
    """Whether the model ``repo`` is in the local Hugging Face cache (its config.json is)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(repo, "config.json"), str)


def hub_load_options(repo: str) -> dict:
    """Extra ``from_pretrained`` arguments for the Hub model ``repo``: none when the Hub answers,
    ``local_files_only`` when it does not but the model is cached; :class:`HubUnreachable` when neither."""
    problem = hub_problem()
    if problem is None:
        return {}
    if is_cached(repo):
        return {"local_files_only": True}
    raise HubUnreachable(
        f"model {repo!r} is not on this machine and the Hugging Face Hub at {endpoint()} cannot be reached "
        f"({problem}): use a local model folder (one written by save_pretrained) or 'bundled' instead"
    )
