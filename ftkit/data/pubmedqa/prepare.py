"""``prepare_pubmedqa``: one entry point for the three PubMedQA subsets (PQA-L official split, PQA-A, PQA-U)."""

from __future__ import annotations

import os

from ftkit.data.prepared import PreparedDataset
from ftkit.data.pubmedqa.hub import prepare_hub_subset
from ftkit.data.pubmedqa.official import prepare_labeled
from ftkit.errors import UsageError


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
    context: str = "all",
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
        context: the abstract sections each prompt shows: ``"all"`` (default), or ``"results"`` (the results
            sections only: about half the tokens, so training and scoring cost about half).
        hub_options: for artificial/unlabeled: ``cache_dir``, ``endpoint``, ``revision`` of the Hub download.
    """
    if subset != "labeled":
        only_l = {"max_test": max_test, "test_truth": test_truth, "url": url}
        given = [k for k, v in only_l.items() if v is not None]
        if given:
            raise UsageError(f"{', '.join(given)} only apply to the labeled subset (PQA-L), not {subset!r}")

        return prepare_hub_subset(
            out,
            subset,
            source=source,
            seed=seed,
            n_validation=n_validation,
            answer_style=answer_style,
            max_train=max_train,
            max_validation=max_validation,
            context=context,
            **hub_options,
        )
    if hub_options:
        raise UsageError(f"unexpected options for the labeled subset: {', '.join(hub_options)}")
    return prepare_labeled(
        out, source, seed, n_validation, answer_style, max_train, max_validation, max_test, test_truth, url, context
    )
