"""PubMedQA PQA-A (artificial, 211k yes/no) and PQA-U (unlabelled, 61k) from the Hugging Face dataset.

The parquet files of ``qiaojin/PubMedQA`` (folders ``pqa_artificial/`` and ``pqa_unlabeled/``) are fetched
with ``huggingface_hub.snapshot_download`` into the Hugging Face cache, so a second run, or a run with
``HF_HUB_OFFLINE=1`` after one download, reads them from disk. Rows have the same format as PQA-L's
(:func:`ftkit.data.pubmedqa.rows.to_row`); PQA-U has no decision, so its answer is the long answer and it has no
``final_decision`` column.
"""

from __future__ import annotations

import os
from pathlib import Path

from ftkit.data.prepared import PreparedDataset, write_prepared
from ftkit.data.pubmedqa.official import DatasetUnavailable
from ftkit.data.pubmedqa.rows import (
    COLUMNS,
    DECISIONS,
    INSTRUCTIONS,
    check_answer_style,
    format_answer,
    format_prompt,
    split_ids,
)
from ftkit.errors import FtkitError, UsageError
from ftkit.files import sha256_file

HF_REPO = "qiaojin/PubMedQA"
CONFIGS = {"artificial": "pqa_artificial", "unlabeled": "pqa_unlabeled"}
UNLABELED_COLUMNS = ("pmid", "prompt", "answer")


class HubDataError(FtkitError, ValueError):
    """PubMedQA parquet files without the Hub dataset's columns or labels."""


def hub_parquet_files(
    subset: str,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
) -> list[Path]:
    """Local paths of the subset's parquet files, downloaded from the Hub on first use."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError

    config = CONFIGS[subset]
    try:
        folder = snapshot_download(
            HF_REPO,
            repo_type="dataset",
            revision=revision,
            allow_patterns=f"{config}/*.parquet",
            cache_dir=cache_dir,
            endpoint=endpoint,
        )
    except (OSError, HfHubHTTPError) as e:
        offline = " (offline mode is on: HF_HUB_OFFLINE=1)" if constants.HF_HUB_OFFLINE else ""
        raise DatasetUnavailable(
            f"Could not get PubMedQA {subset} ({HF_REPO}, folder {config}/) from the Hugging Face "
            f"Hub{offline}: "
            f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. Run once with network access "
            f"(files go to the Hugging Face cache), or download {config}/*.parquet yourself and pass "
            f"source=/--source with the file or folder."
        ) from None
    files = sorted((Path(folder) / config).glob("*.parquet"))
    if not files:
        raise DatasetUnavailable(f"{HF_REPO} has no {config}/*.parquet files at this revision ({folder})")
    return files


def _local_files(source: str | os.PathLike) -> list[Path]:
    p = Path(source)
    files = [p] if p.is_file() else sorted(p.rglob("*.parquet")) if p.is_dir() else []
    if not files:
        raise UsageError(f"{p}: expected a parquet file or a folder holding parquet files")
    return files


def load_hub_rows(files: list[Path], answer_style: str, labelled: bool, sections: str = "all") -> list[dict]:
    """Rows (pmid, prompt, answer[, final_decision]) from parquet files with the Hub dataset's columns."""
    import pandas as pd

    needed = ["pubid", "question", "context", "long_answer"] + (["final_decision"] if labelled else [])
    rows: list[dict] = []
    for f in files:
        df = pd.read_parquet(f)
        missing = [c for c in needed if c not in df.columns]
        if missing:
            raise HubDataError(
                f"{f}: missing columns {missing}; PubMedQA parquet files have {needed}, this one has {list(df.columns)}"
            )
        for pubid, question, context, long_answer, *decision in df[needed].itertuples(index=False, name=None):
            row = {
                "pmid": str(pubid),
                "prompt": format_prompt(
                    question, list(context["contexts"]), list(context["labels"]), answer_style, sections
                ),
                "answer": format_answer(decision[0] if decision else None, long_answer, answer_style),
            }
            if labelled:
                row["final_decision"] = decision[0]
            rows.append(row)
    return rows


def prepare_hub_subset(
    out: str | os.PathLike,
    subset: str,
    *,
    source: str | os.PathLike | None,
    seed: int,
    n_validation: int,
    answer_style: str | None,
    max_train: int | None,
    max_validation: int | None,
    cache_dir: str | os.PathLike | None = None,
    endpoint: str | None = None,
    revision: str | None = None,
    context: str = "all",
) -> PreparedDataset:
    """Write PQA-A (``train.csv`` + stratified ``validation.csv``) or PQA-U (``train.csv`` only) to ``out``; the
    arguments and their defaults are :func:`ftkit.data.pubmedqa.prepare.prepare_pubmedqa`'s.

    PQA-A has no test split: evaluate on PQA-L's official test set. PQA-U rows have no decision, so their
    answer is the long answer (``answer_style="long"``, the only style allowed) and there is no
    ``final_decision`` column.
    """
    if subset not in CONFIGS:
        raise UsageError(f"subset must be 'labeled' or one of {tuple(CONFIGS)}, got {subset!r}")
    labelled = subset == "artificial"
    answer_style = answer_style or ("decision_long" if labelled else "long")
    check_answer_style(answer_style)
    if not labelled and answer_style != "long":
        raise UsageError("PubMedQA unlabeled has no yes/no/maybe decision: only answer_style='long' is possible")

    files = _local_files(source) if source is not None else hub_parquet_files(subset, cache_dir, endpoint, revision)
    rows = load_hub_rows(files, answer_style, labelled, context)
    by_pmid = {r["pmid"]: r for r in rows}
    if labelled:
        bad = [p for p, r in by_pmid.items() if r["final_decision"] not in DECISIONS]
        if bad:
            raise HubDataError(f"final_decision must be one of {DECISIONS}; PMIDs {bad[:5]} are not")
        label_of = {p: r["final_decision"] for p, r in by_pmid.items()}
        ids = split_ids(label_of, None, seed, n_validation, max_train, max_validation)
    else:
        ids = {"train": split_ids(dict.fromkeys(by_pmid, ""), None, seed, 0, max_train)["train"]}
    splits = {name: [by_pmid[p] for p in pmids] for name, pmids in ids.items()}
    manifest = {
        "dataset": "PubMedQA",
        "subset": subset,
        "sources": {
            "hf_repo": HF_REPO,
            "config": CONFIGS[subset],
            "files": {f.name: sha256_file(f) for f in files},
        },
        "seed": seed,
        "n_validation": n_validation if labelled else None,
        "max_train": max_train,
        "max_validation": max_validation if labelled else None,
        "answer_style": answer_style,
        "instruction": INSTRUCTIONS[answer_style],
        "prompt_column": "prompt",
        "answer_column": "answer",
    }
    return write_prepared(
        out,
        splits,
        COLUMNS if labelled else UNLABELED_COLUMNS,
        manifest,
        "final_decision" if labelled else None,
    )
