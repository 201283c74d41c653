"""PubMedQA as prompt/answer CSVs in the fine-tuning service's format.

PQA-L (1000 expert-labelled examples) comes from the official pubmedqa/pubmedqa repository files
``ori_pqal.json`` and ``test_ground_truth.json``, pinned by sha256. The official test split is exactly the 500
PMIDs of ``test_ground_truth.json``; the other 500 are split into train/validation, stratified by label with a
seed. PQA-A (artificial) and PQA-U (unlabelled) come from the Hugging Face dataset ``qiaojin/PubMedQA`` (see
:mod:`ftkit.pubmedqa_hub`). Every output is written through :func:`ftkit._io.atomic_dir`, and the same inputs
and seed give byte-identical files.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

from ._io import sha256_file  # noqa: E402
from .paths import cache_dir, shared_dir
from .prepared import PreparedDataset, write_prepared

PQAL_FILE = "ori_pqal.json"
TRUTH_FILE = "test_ground_truth.json"
SHA256 = {
    PQAL_FILE: "8b3276be8942ebbd77f3ddcda12c1749bf0e490045a736fd8438ee40cf37a41d",
    TRUTH_FILE: "939fe566f09017d13b1ca64d2ddfee0bc2374b366048152997669cccedc44d51",
}
DEFAULT_BASE_URL = "https://raw.githubusercontent.com/pubmedqa/pubmedqa/master/data"
URL_ENV = "FTKIT_PUBMEDQA_URL"
DECISIONS = ("yes", "no", "maybe")
ANSWER_STYLES = ("decision", "decision_long", "long")
COLUMNS = ("pmid", "prompt", "answer", "final_decision")

# The instruction closing each prompt tells the model the shape of answer the chosen style trains it to give.
INSTRUCTIONS = {
    "decision": "Answer with one word: yes, no or maybe.",
    "decision_long": "Answer yes, no or maybe, then give the conclusion that supports your answer.",
    "long": "Answer with the conclusion that the abstract supports.",
}
# Section labels that carry no information; their text is shown without a label.
_NO_LABEL = {"", "UNLABELLED", "UNLABELED", "NONE"}


class DatasetUnavailable(RuntimeError):
    """A PubMedQA file is neither given, cached, in the shared folder, nor downloadable."""


class ChecksumMismatch(ValueError):
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
        raise ValueError(f"unknown PubMedQA file {name!r}; known: {', '.join(SHA256)}")
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
            pooch.retrieve(
                url, known_hash=f"sha256:{expected}", fname=name, path=cached.parent, progressbar=not quiet
            )
        )
    except ValueError as e:  # pooch's hash check; it has already removed the download
        raise ChecksumMismatch(
            f"the {name} downloaded from {url} does not match the pinned sha256: {e}"
        ) from None
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
        raise FileNotFoundError(f"PubMedQA source {path} does not exist (expected the official {PQAL_FILE})")
    return json.loads(path.read_text(encoding="utf-8"))


def load_test_truth(source: str | os.PathLike | None = None, url: str | None = None) -> dict[str, str]:
    """The official test set: PMID -> decision for the 500 PMIDs of ``test_ground_truth.json``."""
    path = Path(source) if source is not None else fetch(TRUTH_FILE, url)
    return json.loads(path.read_text(encoding="utf-8"))


def format_prompt(question: str, contexts: list[str], labels: list[str], answer_style: str) -> str:
    """The question, the abstract's sections as ``LABEL: text`` lines under ``Context:``, the instruction."""
    lines = [f"Question: {question.strip()}", "", "Context:"]
    for i, text in enumerate(contexts):
        label = str(labels[i]).strip().upper() if i < len(labels) and labels[i] is not None else ""
        text = " ".join(str(text).split())
        lines.append(text if label in _NO_LABEL else f"{label}: {text}")
    lines += ["", INSTRUCTIONS[answer_style]]
    return "\n".join(lines)


def format_answer(decision: str | None, long_answer: str, answer_style: str) -> str:
    """The decision word first (evaluation reads it from the first answer token), then the long answer."""
    long_answer = " ".join(str(long_answer).split())
    if answer_style == "long":
        return long_answer
    if decision not in DECISIONS:
        raise ValueError(f"decision must be one of {DECISIONS}, got {decision!r}")
    return decision if answer_style == "decision" else f"{decision}. {long_answer}"


def to_row(pmid: str, record: dict, answer_style: str) -> dict[str, str]:
    """One ``ori_pqal.json`` record as a CSV row (pmid, prompt, answer, final_decision)."""
    decision = record.get("final_decision")
    return {
        "pmid": str(pmid),
        "prompt": format_prompt(record["QUESTION"], record["CONTEXTS"], record["LABELS"], answer_style),
        "answer": format_answer(decision, record["LONG_ANSWER"], answer_style),
        "final_decision": decision or "",
    }


# ----------------------------------------------------------------------------------------------- splitting


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


def stratified_take(
    ids_by_label: dict[str, list[str]], n: int, seed: int, key: str
) -> tuple[list[str], list[str]]:
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
                raise ValueError(f"max_{name} must be >= 0, got {limit}")
            splits[name] = stratified_take(
                _by_label(splits[name], label_of), limit, seed, f"subsample-{name}"
            )[0]
    splits["train"].sort(key=_pmid_key)
    random.Random(f"{seed}/train-order").shuffle(splits["train"])
    for name in ("validation", "test"):
        if name in splits:
            splits[name].sort(key=_pmid_key)
    return splits


def prepare_pubmedqa(
    out: str | os.PathLike = "data/pubmedqa",
    source: str | os.PathLike | None = None,
    seed: int = 42,
    n_validation: int = 50,
    answer_style: str | None = None,
    max_train: int | None = None,
    max_validation: int | None = None,
    max_test: int | None = None,
    test_truth: str | os.PathLike | None = None,
    url: str | None = None,
    subset: str = "labeled",
    **hub_options,
) -> PreparedDataset:
    """Write PubMedQA as ``train.csv``, ``validation.csv``, ``test.csv`` and ``manifest.json`` in ``out``.

    Args:
        out: output folder; replaced as a whole only when everything was written.
        source: local ``ori_pqal.json`` (labeled) or parquet file/folder (artificial, unlabeled); default:
            cache, then the shared folder, then download (PQA-L from GitHub, pinned sha256; PQA-A/U from the
            HF Hub).
        seed: seed of the train/validation split, the subsamples and the training-row order.
        n_validation: validation rows taken (stratified by label) from the 500 non-test PQA-L examples.
        answer_style: ``"decision"`` (yes/no/maybe), ``"decision_long"`` (default: ``"yes. <long answer>"``)
            or ``"long"`` (long answer only; the only style for unlabeled).
        max_train, max_validation, max_test: stratified subsample sizes for quick runs (None: everything).
        test_truth: local ``test_ground_truth.json``; default: beside ``source``, else looked up like
            ``source``.
        url: base URL of the official data folder (else ``$FTKIT_PUBMEDQA_URL``, else GitHub).
        subset: ``"labeled"`` (PQA-L), ``"artificial"`` (PQA-A) or ``"unlabeled"`` (PQA-U).
        hub_options: for artificial/unlabeled: ``cache_dir``, ``endpoint``, ``revision`` of the Hub download.
    """
    if subset != "labeled":
        from .pubmedqa_hub import prepare_hub_subset

        only_l = {"max_test": max_test, "test_truth": test_truth, "url": url}
        given = [k for k, v in only_l.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} only apply to the labeled subset (PQA-L), not {subset!r}")

        return prepare_hub_subset(
            out,
            subset,
            source=source,
            seed=seed,
            n_validation=n_validation,
            answer_style=answer_style,
            max_train=max_train,
            max_validation=max_validation,
            **hub_options,
        )
    if hub_options:
        raise TypeError(f"unexpected options for the labeled subset: {', '.join(hub_options)}")
    answer_style = answer_style or "decision_long"
    if answer_style not in ANSWER_STYLES:
        raise ValueError(f"answer_style must be one of {ANSWER_STYLES}, got {answer_style!r}")
    if test_truth is None and source is not None and (Path(source).parent / TRUTH_FILE).is_file():
        test_truth = Path(source).parent / TRUTH_FILE
    pqal_path = Path(source) if source is not None else fetch(PQAL_FILE, url)
    truth_path = Path(test_truth) if test_truth is not None else fetch(TRUTH_FILE, url)
    pqal = load_pqal(pqal_path)
    truth = load_test_truth(truth_path)
    _check_truth(pqal, truth, pqal_path, truth_path)

    label_of = {pmid: rec["final_decision"] for pmid, rec in pqal.items()}
    ids = split_ids(label_of, list(truth), seed, n_validation, max_train, max_validation, max_test)
    splits = {name: [to_row(p, pqal[p], answer_style) for p in pmids] for name, pmids in ids.items()}
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
        raise ValueError(
            f"{len(missing)} test PMIDs of {truth_path} are not in {pqal_path} (e.g. {missing[:5]}); "
            f"both files must come from the same PubMedQA release"
        )
    bad = [p for p, rec in pqal.items() if rec.get("final_decision") not in DECISIONS]
    if bad:
        raise ValueError(f"{pqal_path}: final_decision must be one of {DECISIONS}; PMIDs {bad[:5]} are not")
    differ = [p for p, d in truth.items() if pqal[p]["final_decision"] != d]
    if differ:
        raise ValueError(
            f"{len(differ)} test PMIDs have a different decision in {truth_path} than in {pqal_path} "
            f"(e.g. {differ[:5]}); both files must come from the same PubMedQA release"
        )
