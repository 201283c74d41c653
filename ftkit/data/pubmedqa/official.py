"""PubMedQA PQA-L from the official pubmedqa/pubmedqa repository files, pinned by sha256.

``ori_pqal.json`` holds the 1000 expert-labelled examples and ``test_ground_truth.json`` the official test set:
exactly its 500 PMIDs; the other 500 are split into train/validation, stratified by label with a seed. Files are
found in the ftkit cache, then in ``<shared>/pubmedqa``, then downloaded with pooch (which checks the hash and keeps
nothing when it does not match). Every output is written all at once, and the same inputs and seed give
byte-identical files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from ftkit.data.prepared import PreparedDataset, write_prepared
from ftkit.data.pubmedqa.rows import COLUMNS, DECISIONS, INSTRUCTIONS, check_answer_style, split_ids, to_row
from ftkit.errors import FtkitError
from ftkit.files import sha256_file
from ftkit.paths import cache_dir, shared_dir

PQAL_FILE = "ori_pqal.json"
TRUTH_FILE = "test_ground_truth.json"
SHA256 = {
    PQAL_FILE: "8b3276be8942ebbd77f3ddcda12c1749bf0e490045a736fd8438ee40cf37a41d",
    TRUTH_FILE: "939fe566f09017d13b1ca64d2ddfee0bc2374b366048152997669cccedc44d51",
}
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data"
URL_ENV = "FTKIT_PUBMEDQA_URL"


class DatasetUnavailable(FtkitError, RuntimeError):
    """A PubMedQA file is neither given, cached, in the shared folder, nor downloadable, or it is not PQA-L."""


class ChecksumMismatch(FtkitError, ValueError):
    """A PubMedQA file does not have the pinned sha256."""


def base_url(url: str | None = None) -> str:
    """Where the official files are downloaded from: ``url``, else ``$FTKIT_PUBMEDQA_URL``, else GitHub."""
    return (url or os.environ.get(URL_ENV) or DEFAULT_BASE_URL).rstrip("/")


def pubmedqa_cache() -> Path:
    """Folder of the downloaded official files (``<ftkit cache>/pubmedqa``)."""
    return cache_dir() / "pubmedqa"


def fetch(name: str, url: str | None = None, quiet: bool = True) -> Path:
    """Path of a verified copy of an official PQA-L file (``ori_pqal.json`` or ``test_ground_truth.json``).

    Looks in the ftkit cache, then in ``<shared>/pubmedqa`` (CI keeps a copy there), then downloads into the
    cache with pooch, which checks the sha256 and keeps nothing when it does not match.
    """
    if name not in SHA256:
        raise DatasetUnavailable(f"unknown PubMedQA file {name!r}; known: {', '.join(SHA256)}")
    expected = SHA256[name]
    cached = pubmedqa_cache() / name
    if cached.is_file() and sha256_file(cached) == expected:
        return cached
    shared = shared_dir()
    if shared is not None and (shared / "pubmedqa" / name).is_file():
        local = shared / "pubmedqa" / name
        _verify(local, expected)
        return local
    return _download(name, f"{base_url(url)}/{name}", expected, cached, quiet)


def _verify(path: Path, expected: str) -> None:
    actual = sha256_file(path)
    if actual != expected:
        raise ChecksumMismatch(
            f"{path} has sha256 {actual}, but the official {path.name} has {expected}. "
            "The file is damaged or a different version: delete it or replace it with the official file."
        )


def _download(name: str, url: str, expected: str, cached: Path, quiet: bool) -> Path:
    import pooch
    import requests

    try:
        return Path(
            pooch.retrieve(url, known_hash=f"sha256:{expected}", fname=name, path=cached.parent, progressbar=not quiet)
        )
    except ValueError as e:  # pooch's hash check; it has already removed the download
        raise ChecksumMismatch(f"the {name} downloaded from {url} does not match the pinned sha256: {e}") from None
    except (requests.RequestException, OSError) as e:
        raise DatasetUnavailable(
            f"Could not get PubMedQA {name}: it is not in the cache and downloading {url} failed "
            f"({type(e).__name__}: {e}). Put the official file at {cached} (or pass source=/--source), "
            f"or set {URL_ENV} to a reachable copy of the pubmedqa/pubmedqa data folder."
        ) from None


def load_pqal(source: str | os.PathLike | None = None, url: str | None = None) -> dict[str, dict]:
    """The PQA-L examples as in the official ``ori_pqal.json``: PMID -> record (QUESTION, CONTEXTS, LABELS,
    LONG_ANSWER, final_decision, ...). ``source`` is a local copy; without it see :func:`fetch`."""
    path = Path(source) if source is not None else fetch(PQAL_FILE, url)
    if not path.is_file():
        raise DatasetUnavailable(f"PubMedQA source {path} does not exist (expected the official {PQAL_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_test_truth(source: str | os.PathLike | None = None, url: str | None = None) -> dict[str, str]:
    """The official test set: PMID -> decision for the 500 PMIDs of ``test_ground_truth.json``."""
    path = Path(source) if source is not None else fetch(TRUTH_FILE, url)
    return json.loads(path.read_text(encoding="utf-8"))


def prepare_labeled(
    out: str | os.PathLike,
    source: str | os.PathLike | None,
    seed: int,
    n_validation: int,
    answer_style: str | None,
    max_train: int | None,
    max_validation: int | None,
    max_test: int | None,
    test_truth: str | os.PathLike | None,
    url: str | None,
    context: str = "all",
) -> PreparedDataset:
    """Write PQA-L's official split (see :func:`ftkit.data.pubmedqa.prepare.prepare_pubmedqa` for the arguments)."""
    answer_style = check_answer_style(answer_style or "decision_long")
    if test_truth is None and source is not None and (Path(source).parent / TRUTH_FILE).is_file():
        test_truth = Path(source).parent / TRUTH_FILE
    pqal_path = Path(source) if source is not None else fetch(PQAL_FILE, url)
    truth_path = Path(test_truth) if test_truth is not None else fetch(TRUTH_FILE, url)
    pqal = load_pqal(pqal_path)
    truth = load_test_truth(truth_path)
    _check_truth(pqal, truth, pqal_path, truth_path)

    label_of = {pmid: rec["final_decision"] for pmid, rec in pqal.items()}
    ids = split_ids(label_of, list(truth), seed, n_validation, max_train, max_validation, max_test)
    splits = {name: [to_row(p, pqal[p], answer_style, context) for p in pmids] for name, pmids in ids.items()}
    manifest = {
        "dataset": "PubMedQA",
        "subset": "labeled",
        "sources": {
            PQAL_FILE: _source_info(pqal_path, PQAL_FILE),
            TRUTH_FILE: _source_info(truth_path, TRUTH_FILE),
        },
        "seed": seed,
        "n_validation": n_validation,
        "max_train": max_train,
        "max_validation": max_validation,
        "max_test": max_test,
        "answer_style": answer_style,
        "context": context,
        "instruction": INSTRUCTIONS[answer_style],
        "prompt_column": "prompt",
        "answer_column": "answer",
    }
    return write_prepared(out, splits, COLUMNS, manifest, "final_decision", DECISIONS)


def _source_info(path: Path, name: str) -> dict:
    digest = sha256_file(path)
    return {"sha256": digest, "official": digest == SHA256[name]}


def _check_truth(pqal: dict, truth: dict, pqal_path: Path, truth_path: Path) -> None:
    missing = [p for p in truth if p not in pqal]
    if missing:
        raise DatasetUnavailable(
            f"{len(missing)} test PMIDs of {truth_path} are not in {pqal_path} (e.g. {missing[:5]}); "
            f"both files must come from the same PubMedQA release"
        )
    bad = [p for p, rec in pqal.items() if rec.get("final_decision") not in DECISIONS]
    if bad:
        raise DatasetUnavailable(f"{pqal_path}: final_decision must be one of {DECISIONS}; PMIDs {bad[:5]} are not")
    differ = [p for p, d in truth.items() if pqal[p]["final_decision"] != d]
    if differ:
        raise DatasetUnavailable(
            f"{len(differ)} test PMIDs have a different decision in {truth_path} than in {pqal_path} "
            f"(e.g. {differ[:5]}); both files must come from the same PubMedQA release"
        )
