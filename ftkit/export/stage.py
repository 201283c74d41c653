"""Export a finished job as one archive: the model (LoRA adapter, merged model, full model, or a GGUF file with
an Ollama Modelfile), its tokenizer and chat template, the job record, metrics, data manifest, library versions,
evaluation results and a model card.

The archive is one flat folder, so its contents are also a loadable model folder and a Hugging Face Hub repo
as they stand (``ftkit push`` uploads the same folder). Load it back with :func:`ftkit.models.exported.load_exported`.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

from ftkit.errors import redact as redact_text
from ftkit.export.archive import write_archive
from ftkit.export.card import model_card
from ftkit.export.errors import ExportError
from ftkit.export.gguf import check_quant, write_gguf
from ftkit.export.gguf_check import verify_gguf
from ftkit.export.merge import base_model_ref, check_export_dtype, default_export_dtype, merge_into, save_full_model
from ftkit.export.modelfile import modelfile_text
from ftkit.files import sha256_file, write_json, write_text
from ftkit.job.store import METRIC_FIELDS, Job, get_job
from ftkit.models.catalog import resolve_model
from ftkit.models.exported import ARCHIVE_SUFFIXES, EXPORT_MANIFEST, is_archive_path
from ftkit.version import __version__

FORMAT_VERSION = 1
FORMATS = ("safetensors", "gguf")
# peft writes its own placeholder README into the adapter folder; the export writes a real model card instead
_SKIP_MODEL_FILES = {"README.md", "training_args.bin", "best.json"}
_SECRET_KEY = re.compile(r"(^|_)(token|secret|password|api_key|apikey|auth|authorization)$", re.IGNORECASE)


def as_job(job, jobs_dir=None) -> Job:
    """A :class:`~ftkit.job.store.Job` from a Job, a job id (in ``jobs_dir``) or a job folder."""
    return job if isinstance(job, Job) else get_job(str(job), jobs_dir)


def redact(obj):
    """A copy of a JSON-like value with token-like keys and Hugging Face token values replaced by '***'."""
    if isinstance(obj, dict):
        return {k: "***" if _SECRET_KEY.search(str(k)) and obj[k] else redact(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    if isinstance(obj, str):
        return redact_text(obj)
    return obj


def export_versions() -> dict:
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("ftkit", "torch", "transformers", "peft", "accelerate", "safetensors", "huggingface_hub"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _read_json(path: Path, what: str):
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ExportError(f"cannot read {what} {path}: {e}") from None


def _eval_files(folder: Path) -> list[Path]:
    """Evaluation results in a folder: ``ftkit evaluate``'s ``*.metrics.json`` and an ``evaluation.json``
    (predictions files are left out: they are per-row and can be large)."""
    if not folder.is_dir():
        return []
    return sorted({*folder.glob("*.metrics.json"), *folder.glob("evaluation.json")})


def collect_evaluation(job, evaluation=None) -> dict[str, dict]:
    """Evaluation results to ship: archive name -> JSON content.

    ``evaluation`` (a dict, an object with ``to_dict()`` such as an EvalResult, a JSON file, or a folder of
    ``*.metrics.json`` files) goes in as evaluation.json or evaluation/<file>; the job folder's own
    ``evaluation.json`` and ``eval/*.metrics.json`` files are picked up too.
    """
    found: dict[str, dict] = {}
    if (job.path / "evaluation.json").is_file():
        found["evaluation.json"] = _read_json(job.path / "evaluation.json", "evaluation file")
    for p in _eval_files(job.path / "eval"):
        found[f"evaluation/{p.name}"] = _read_json(p, "evaluation file")
    if hasattr(evaluation, "to_dict"):
        evaluation = evaluation.to_dict()
    if isinstance(evaluation, dict):
        found["evaluation.json"] = evaluation
    elif evaluation is not None:
        p = Path(evaluation)
        if p.is_dir():
            files = _eval_files(p)
            if not files:
                raise ExportError(f"evaluation={str(p)!r}: the folder has no *.metrics.json or evaluation.json")
            for f in files:
                found[f"evaluation/{f.name}"] = _read_json(f, "evaluation file")
        elif p.is_file():
            found["evaluation.json"] = _read_json(p, "evaluation file")
        else:
            raise ExportError(
                f"evaluation={str(evaluation)!r}: no such file or folder (give a dict, a JSON "
                "file or a folder of *.metrics.json files)"
            )
    return {k: redact(v) for k, v in found.items()}


def _write_metrics(job, folder: Path) -> list[dict]:
    rows = job.metrics()
    write_text(folder / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    columns = list(METRIC_FIELDS) + sorted({k for r in rows for k in r} - set(METRIC_FIELDS))
    with open(folder / "metrics.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, lineterminator="\n")
        w.writeheader()
        for r in rows:
            w.writerow({k: _cell(r.get(k)) for k in columns})
    return rows


def _cell(value) -> str:
    """A metrics.csv cell: empty for null, JSON for a nested value (the predicted-label shares)."""
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def _data_manifest(record: dict) -> tuple[dict, dict | None]:
    """The data files' names, hashes and row counts from job.json, and the prepared dataset's manifest.json."""
    data, rows = record.get("data") or {}, record.get("rows") or {}
    out = {"dataset": (record.get("spec") or {}).get("dataset"), "files": {}}
    prepared = None
    for split, entry in data.items():
        if not entry:
            continue
        out["files"][split] = {
            "file": Path(entry["path"]).name,
            "path": entry["path"],
            "sha256": entry["sha256"],
            "rows_used": rows.get(split),
        }
        manifest = Path(entry["path"]).parent / "manifest.json"
        if prepared is None and manifest.is_file():
            prepared = _read_json(manifest, "dataset manifest")
    return out, prepared


def _copy_model_files(src: Path, dest: Path) -> None:
    for p in sorted(src.iterdir()):
        if p.is_file() and p.name not in _SKIP_MODEL_FILES:
            shutil.copy2(p, dest / p.name)


def _portable_adapter_config(folder: Path, info) -> None:
    """Point the adapter at its base by Hub repo id instead of this machine's folder, when there is one."""
    cfg_path = folder / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    if info.hf_repo:
        cfg["base_model_name_or_path"] = info.hf_repo
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")


def _check_options(fmt: str, kind: str, dtype: str | None, quant: str | None) -> None:
    if fmt not in FORMATS:
        raise ExportError(f"--format {fmt!r} is not an export format (allowed: {', '.join(FORMATS)})")
    if quant is not None and fmt != "gguf":
        raise ExportError(f"--quant {quant!r} applies to --format gguf only (the GGUF file's weight type)")
    if dtype is not None:
        if fmt == "gguf":
            raise ExportError(f"--dtype {dtype!r} applies to merged and full exports; a GGUF export takes --quant")
        if kind == "adapter":
            raise ExportError(
                f"--dtype {dtype!r} applies to merged and full exports; the adapter is exported as trained "
                "(add --merged to merge it into the base in that precision)"
            )
        check_export_dtype(dtype)


def _full_model(job, folder: Path, info, dtype: str | None, quiet: bool) -> str:
    """A full fine-tune's files in ``folder``, cast to ``dtype`` (default: the base's half precision)."""
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(job.model_dir)
    dtype = dtype or default_export_dtype(info, config)
    saved = str(getattr(config, "dtype", None) or "").replace("torch.", "")
    if {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}[dtype] == saved:
        _copy_model_files(job.model_dir, folder)
        return dtype
    save_full_model(job, folder, dtype, quiet=quiet)
    return dtype


def _gguf_model(job, folder: Path, lora: bool, quant: str, quiet: bool) -> tuple[dict, dict | None]:
    """The GGUF file, checked by reloading it against the fp32 merged (or full) model, and its Modelfile."""
    from transformers import AutoConfig, AutoTokenizer

    with tempfile.TemporaryDirectory(prefix=".ftkit-gguf-", dir=folder.parent) as scratch:
        merge_check = merge_into(job, Path(scratch), dtype="fp32", quiet=quiet) if lora else None
        src = Path(scratch) if lora else job.model_dir
        name = f"{job.id}-{quant}.gguf"
        if not quiet:
            print(f"ftkit: writing {name} and loading it back to check it", flush=True)
        t0 = time.monotonic()
        write_gguf(src, folder / name, quant, name=job.record.get("name") or job.id)
        t1 = time.monotonic()
        verification = verify_gguf(src, folder / name, quant)
        t2 = time.monotonic()
        config = AutoConfig.from_pretrained(src)
        text = modelfile_text(
            AutoTokenizer.from_pretrained(src), name, getattr(config, "max_position_embeddings", None)
        )
    write_text(folder / "Modelfile", text)
    gguf = {
        "file": name,
        "quant": quant,
        "bytes": (folder / name).stat().st_size,
        "verification": verification,
        "seconds": {"write": round(t1 - t0, 1), "verify": round(t2 - t1, 1)},
    }
    return gguf, merge_check


def stage_export(
    job,
    folder: str | os.PathLike,
    merged: bool = False,
    evaluation=None,
    quiet: bool = False,
    dtype: str | None = None,
    format: str = "safetensors",
    quant: str | None = None,
) -> dict:
    """Write the export's files into ``folder`` (what the archive and a Hub push hold); returns its manifest."""

    job = as_job(job)
    folder = Path(folder)
    rec = job.record
    if rec.get("status") != "completed" or not job.model_dir.is_dir():
        raise ExportError(
            f"job {job.id!r} is {rec.get('status')}; only a completed job has a model to "
            f"export ({job.model_dir} {'exists' if job.model_dir.is_dir() else 'is missing'})"
        )
    lora = bool((rec.get("result") or {}).get("lora", (job.model_dir / "adapter_config.json").is_file()))
    info = resolve_model(base_model_ref(rec))
    kind = "gguf" if format == "gguf" else "full" if not lora else "merged" if merged else "adapter"
    _check_options(format, kind, dtype, quant)
    merge_check = gguf = None
    if kind == "gguf":
        gguf, merge_check = _gguf_model(job, folder, lora, check_quant(quant or "f16"), quiet)
    elif kind == "merged":
        merge_check = merge_into(job, folder, dtype=dtype, quiet=quiet)
        dtype = merge_check["dtype"]
    elif kind == "full":
        dtype = _full_model(job, folder, info, dtype, quiet)
    else:
        _copy_model_files(job.model_dir, folder)
        _portable_adapter_config(folder, info)

    job_record = redact({k: v for k, v in rec.items() if k not in ("pid", "pid_started_at", "host")})
    write_json(folder / "job.json", job_record)
    metrics = _write_metrics(job, folder)
    data, prepared = _data_manifest(rec)
    write_json(folder / "data_manifest.json", data)
    if prepared is not None:
        write_json(folder / "dataset_manifest.json", prepared)
    versions = {"training": rec.get("versions"), "export": export_versions()}
    write_json(folder / "versions.json", versions)
    evaluations = collect_evaluation(job, evaluation)
    for name, content in evaluations.items():
        write_json(folder / name, content)
    manifest = {
        "format": FORMAT_VERSION,
        "created_by": f"ftkit {__version__}",
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "kind": kind,
        "job": {"id": job.id, "name": rec.get("name")},
        "base_model": {
            "ref": base_model_ref(rec),
            "name": info.name,
            "kind": info.kind,
            "hf_repo": info.hf_repo,
        },
        "dtype": dtype,
        "merge_check": merge_check,
        "gguf": gguf,
        "evaluation_files": sorted(evaluations),
    }
    card = model_card(rec, manifest, metrics, data, prepared, evaluations, versions)
    write_text(folder / "README.md", card)
    manifest["files"] = {
        p.relative_to(folder).as_posix(): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file()
    }
    write_json(folder / EXPORT_MANIFEST, manifest)
    return manifest


def export_job(
    job,
    out: str | os.PathLike | None = None,
    merged: bool = False,
    evaluation=None,
    jobs_dir: str | os.PathLike | None = None,
    quiet: bool = False,
    dtype: str | None = None,
    format: str = "safetensors",
    quant: str | None = None,
) -> Path:
    """Export a completed job as one ``.tar.gz`` archive; returns its path.

    ``job`` is a :class:`~ftkit.job.store.Job`, a job id (in ``jobs_dir``) or a job folder. ``out`` defaults to
    ``<job id>.tar.gz`` (``<job id>-merged.tar.gz`` with ``merged``, ``<job id>-gguf-<quant>.tar.gz`` for GGUF).
    With ``merged=True`` the LoRA adapter is merged into a full-precision copy of the base model (refused for a
    quantised base, or when the merged model's logits differ from base + adapter) and saved in ``dtype``
    ("fp32", "fp16" or "bf16"; default the base's half precision, as for a full fine-tune). ``format="gguf"``
    writes the merged model as one GGUF file (``quant`` "f16", "bf16" or "q8_0") with an Ollama Modelfile,
    checked by loading it back and comparing it with the merged model. ``evaluation`` adds evaluation results
    (dict, JSON file or folder of JSON files) to those found in the job folder. The archive is written to a
    temporary file and renamed at the end.
    """
    job = as_job(job, jobs_dir)
    suffix = f"-gguf-{quant or 'f16'}" if format == "gguf" else "-merged" if merged else ""
    out = Path(out or f"{job.id}{suffix}.tar.gz")
    if not is_archive_path(out):
        raise ExportError(f"--out {out}: the archive name must end with {' or '.join(ARCHIVE_SUFFIXES)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    # staged beside the archive: a merged model can be far larger than /tmp
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as tmp:
        stage_export(job, tmp, merged, evaluation, quiet, dtype=dtype, format=format, quant=quant)
        write_archive(tmp, out)
    return out
