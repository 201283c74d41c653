"""The base models a job can name: the service's ten catalog models, the bundled CPU model, local folders and
any Hugging Face repo.

Resolving a reference never loads weights and never touches the network: the bundled model's folder is
located (and converted if needed) only when ``ModelInfo.source`` is read, and a hub model's context length is
read from its ``config.json`` only when ``ModelInfo.context_length`` is read.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from ftkit.errors import FtkitError
from ftkit.models import bundled
from ftkit.models.hubaccess import hub_load_options

KINDS = ("catalog", "bundled", "hub", "local")
CATALOG_BATCH_SIZES = (4, 8, 12, 16, 20, 24, 28, 32)
ANY_BATCH_SIZE = tuple(range(1, 65))
DEFAULT_MODEL = bundled.NAME
BUNDLED_ALIASES = ("bundled", bundled.NAME, bundled.HF_REPO)

# config.json keys that state a model's maximum sequence length, most common first
_LENGTH_KEYS = (
    "max_position_embeddings",
    "n_positions",
    "max_sequence_length",
    "seq_length",
    "max_seq_len",
    "n_ctx",
)
_HF_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


MODEL_REF_HELP = (
    "a catalog id or name from `ftkit models`, its HF repo id, 'bundled', a local model folder, or "
    "a Hugging Face repo id like org/name"
)


class UnknownModelError(FtkitError, ValueError):
    """A model reference that is no catalog model, not the bundled model, a local folder or a hub repo id."""

    def __init__(self, ref: str, reason: str, suggestions: list[str] | None = None):
        self.ref, self.suggestions = ref, list(suggestions or [])
        hint = f"; did you mean {' or '.join(repr(s) for s in self.suggestions)}?" if self.suggestions else ""
        self.reason = reason + hint
        super().__init__(f"{self.reason} (allowed: {MODEL_REF_HELP})")


@dataclass(frozen=True)
class ModelInfo:
    """A resolved base model; ``source`` and ``context_length`` are computed on use, so resolving is cheap."""

    id: str | None
    """The service's API id (a UUID) for catalog models, else None."""
    name: str
    organization: str
    hf_repo: str | None
    """The Hugging Face repo id the model corresponds to (None for a local folder)."""
    kind: str
    """"catalog", "bundled", "hub" or "local"."""
    batch_sizes: tuple[int, ...]
    precision: str
    """The service's training precision for catalog models; the checkpoint's dtype (or "auto") otherwise."""
    known_context_length: int | None = None
    """The context length when it is known without the network (None for hub models until asked)."""
    path: str | None = None
    """The folder of a local model."""

    @property
    def source(self) -> str:
        """What to pass to ``from_pretrained``: a local folder or a Hugging Face repo id."""
        if self.kind == "bundled":
            return str(bundled.ensure())
        if self.kind == "local":
            return str(self.path)
        return str(self.hf_repo)

    @cached_property
    def context_length(self) -> int | None:
        """Maximum sequence length. A hub model's ``config.json`` is fetched (or read from the HF cache) on
        first access. None only when a model's config states no length."""
        if self.known_context_length is not None or self.kind != "hub":
            return self.known_context_length
        return _hub_context_length(str(self.hf_repo))

    def describe(self) -> str:
        where = {
            "catalog": f"catalog id {self.id}",
            "bundled": "bundled with ftkit, runs offline",
            "hub": "downloaded from the Hugging Face Hub",
            "local": f"local folder {self.path}",
        }[self.kind]
        return f"{self.name} ({where}; HF {self.hf_repo})" if self.hf_repo else f"{self.name} ({where})"


def _catalog_entry(org: str, name: str, uuid: str, hf_repo: str) -> ModelInfo:
    return ModelInfo(
        id=uuid,
        name=name,
        organization=org,
        hf_repo=hf_repo,
        kind="catalog",
        batch_sizes=CATALOG_BATCH_SIZES,
        precision="float16",
        known_context_length=8192,
    )


# The service's model table (docs "Step 1 - Select a Base Model"), in the docs' order.
CATALOG: tuple[ModelInfo, ...] = (
    _catalog_entry(
        "Meta",
        "Meta-Llama-3-8B-Instruct",
        "e5f6a7b8-c9d0-1234-efab-567890123456",
        "meta-llama/Meta-Llama-3-8B-Instruct",
    ),
    _catalog_entry("Meta", "Meta-Llama-3-8B", "d4e5f6a7-b8c9-0123-defa-456789012345", "meta-llama/Meta-Llama-3-8B"),
    _catalog_entry("Meta", "Meta-Llama-3.1-8B", "28475dc6-e4be-49a4-8a87-660c4a7bb0ff", "meta-llama/Llama-3.1-8B"),
    _catalog_entry(
        "Meta",
        "Meta-Llama-3.1-8B-Instruct",
        "5b912da4-4a68-43eb-9224-38239535d934",
        "meta-llama/Llama-3.1-8B-Instruct",
    ),
    _catalog_entry(
        "Mistral AI",
        "Mistral-7B-Instruct-v0.1",
        "f6a7b8c9-d0e1-2345-fabc-678901234567",
        "mistralai/Mistral-7B-Instruct-v0.1",
    ),
    _catalog_entry(
        "Mistral AI",
        "Mistral-7B-Instruct-v0.2",
        "a7b8c9d0-e1f2-3456-abcd-789012345678",
        "mistralai/Mistral-7B-Instruct-v0.2",
    ),
    _catalog_entry(
        "Deepseek",
        "DeepSeek-R1-Distill-Qwen-1.5B",
        "b1432ae3-b4ce-4e12-be53-ab0555d00f93",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    ),
    _catalog_entry(
        "Deepseek",
        "DeepSeek-R1-Distill-Qwen-14B",
        "c3d4e5f6-a7b8-9012-cdef-345678901234",
        "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    ),
    _catalog_entry("Qwen", "Qwen2-1.5B-Instruct", "a1b2c3d4-e5f6-7890-abcd-ef1234567890", "Qwen/Qwen2-1.5B-Instruct"),
    _catalog_entry("Qwen", "Qwen2.5-14B-Instruct", "b2c3d4e5-f6a7-8901-bcde-f23456789012", "Qwen/Qwen2.5-14B-Instruct"),
)

BUNDLED = ModelInfo(
    id=None,
    name=bundled.NAME,
    organization="HuggingFaceTB",
    hf_repo=bundled.HF_REPO,
    kind="bundled",
    batch_sizes=ANY_BATCH_SIZE,
    precision="float32",
    known_context_length=8192,
)


def list_models(include_bundled: bool = True) -> list[ModelInfo]:
    """The ten catalog models in the service's order, then the bundled CPU model."""
    return [*CATALOG, BUNDLED] if include_bundled else list(CATALOG)


def _known_refs() -> dict[str, ModelInfo]:
    refs: dict[str, ModelInfo] = {a.lower(): BUNDLED for a in BUNDLED_ALIASES}
    for m in CATALOG:
        for r in (m.id, m.name, m.hf_repo):
            refs[str(r).lower()] = m
    return refs


def _read_config(folder: Path) -> dict:
    try:
        return json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise UnknownModelError(str(folder), f"model folder {folder}: cannot read config.json ({e})") from e


def context_length_from_config(config: dict) -> int | None:
    """The maximum sequence length a ``config.json`` states (multimodal ones keep it in ``text_config``)."""
    for cfg in (config, config.get("text_config") or {}):
        for key in _LENGTH_KEYS:
            v = cfg.get(key)
            if isinstance(v, int) and not isinstance(v, bool) and v > 0:
                return v
    return None


class ModelConfigUnavailable(FtkitError, RuntimeError):
    """A hub model's config.json cannot be fetched (offline, gated, missing)."""


def _hub_context_length(repo: str) -> int | None:
    from huggingface_hub import hf_hub_download

    options = hub_load_options(repo)  # offline: the cached config, or a one-line error at once
    try:
        path = hf_hub_download(repo, "config.json", **options)
    except Exception as e:  # gated, missing: say which model and why
        raise ModelConfigUnavailable(f"cannot read config.json of Hugging Face model {repo!r}: {e}") from e
    return context_length_from_config(json.loads(Path(path).read_text(encoding="utf-8")))


def _local_model(folder: Path) -> ModelInfo:
    cfg = _read_config(folder)
    dtype = cfg.get("dtype") or cfg.get("torch_dtype") or "auto"
    return ModelInfo(
        id=None,
        name=folder.name,
        organization="local",
        hf_repo=None,
        kind="local",
        batch_sizes=ANY_BATCH_SIZE,
        precision=str(dtype),
        known_context_length=context_length_from_config(cfg),
        path=str(folder),
    )


def _looks_like_path(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~", ".\\")) or "\\" in ref or ref.count("/") > 1


def resolve_model(ref: str | ModelInfo, base_dir: str | Path | None = None) -> ModelInfo:
    """Turn a model reference into a :class:`ModelInfo`, without loading anything or using the network.

    ``ref`` is, in this order: the bundled model ("bundled", "SmolLM2-135M-Instruct" or its hub id
    "HuggingFaceTB/SmolLM2-135M-Instruct", all served from ftkit's bundled copy); a catalog model's API id
    (UUID), name (any case) or Hugging Face repo id; a local model folder (relative to ``base_dir``, default
    the current folder) holding a ``config.json``; or any other Hugging Face repo id ("org/name", fetched when
    loaded). A :class:`ModelInfo` is returned unchanged. Anything else raises :class:`UnknownModelError` with
    close matches.
    """
    if isinstance(ref, ModelInfo):
        return ref
    if not isinstance(ref, str) or not ref.strip():
        raise UnknownModelError(str(ref), f"model reference must be a non-empty string, got {ref!r}")
    ref = ref.strip()
    known = _known_refs()
    if ref.lower() in known:
        return known[ref.lower()]
    folder = Path(ref).expanduser()
    if not folder.is_absolute() and base_dir is not None:
        folder = Path(base_dir) / folder
    if folder.is_dir():
        if not (folder / "config.json").is_file():
            raise UnknownModelError(
                ref,
                f"folder {folder} holds no config.json, so it is not a model folder "
                "(point at a folder written by save_pretrained)",
            )
        return _local_model(folder.resolve())
    if _HF_REPO.match(ref) and not _looks_like_path(ref):
        org, name = ref.split("/", 1)
        return ModelInfo(
            id=None,
            name=name,
            organization=org,
            hf_repo=ref,
            kind="hub",
            batch_sizes=ANY_BATCH_SIZE,
            precision="auto",
        )
    what = f"no model folder {folder}" if _looks_like_path(ref) else f"unknown model {ref!r}"
    raise UnknownModelError(ref, what, close_matches(ref))


def close_matches(ref: str, n: int = 3, cutoff: float = 0.6) -> list[str]:
    """Catalog names, ids and repo ids (and the bundled names) that look like ``ref``."""
    names: dict[str, str] = {}
    for m in list_models():
        for r in (m.name, m.id, m.hf_repo):
            if r:
                names.setdefault(r.lower(), r)
    names.setdefault("bundled", "bundled")
    found = difflib.get_close_matches(ref.lower(), list(names), n=n, cutoff=cutoff)
    if not found:  # a short ref like "llama3" or "qwen2.5": match it inside the names, ignoring punctuation
        key = re.sub(r"[^a-z0-9]", "", ref.lower())
        found = [k for k in names if key and key in re.sub(r"[^a-z0-9]", "", k) and "/" not in k][:n]
    return [names[f] for f in found]


def batch_sizes_text(sizes: tuple[int, ...]) -> str:
    if len(sizes) > 2 and sizes == tuple(range(sizes[0], sizes[-1] + 1)):
        return f"{sizes[0]}..{sizes[-1]}"
    return ",".join(map(str, sizes))


def model_rows(models: list[ModelInfo]) -> list[dict]:
    return [
        {
            "name": m.name,
            "id": m.id or "-",
            "organisation": m.organization,
            "context": m.known_context_length,
            "batch sizes": batch_sizes_text(m.batch_sizes),
            "precision": m.precision,
            "HF repo": m.hf_repo or "-",
            "kind": m.kind,
        }
        for m in models
    ]


def catalog_table(include_bundled: bool = True):
    """The models as a pandas DataFrame (renders as an HTML table in a notebook)."""
    import pandas as pd

    return pd.DataFrame(model_rows(list_models(include_bundled)))


def format_table(include_bundled: bool = True) -> str:
    """The models as a plain-text table for the terminal."""
    rows = model_rows(list_models(include_bundled))
    cols = list(rows[0])
    widths = {c: max(len(c), *(len(str(r[c])) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    out = [line, "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r[c]).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(s.rstrip() for s in out)
