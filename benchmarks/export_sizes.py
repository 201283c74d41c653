"""Export formats of one bundled-model job: archive and model-file sizes, wall times and the reload checks.

Trains SmolLM2-135M-Instruct (bundled) for one LoRA step on 8 PubMedQA rows, then exports it as the adapter, merged
fp32, merged fp16 (the default), GGUF f16 and GGUF q8_0. Writes ``export_sizes-<date>.json`` and ``.md`` to
``benchmarks/results/`` (``--out DIR`` elsewhere).

    python benchmarks/export_sizes.py
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tarfile
import tempfile
import time
from pathlib import Path

from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
from ftkit.export.stage import export_job
from ftkit.train.engine import train

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {
    "adapter": {},
    "merged fp32": {"merged": True, "dtype": "fp32"},
    "merged fp16 (default)": {"merged": True},
    "GGUF f16": {"format": "gguf", "quant": "f16"},
    "GGUF q8_0": {"format": "gguf", "quant": "q8_0"},
}


def _model_bytes(archive: Path) -> int:
    with tarfile.open(archive) as tar:
        return sum(m.size for m in tar.getmembers() if m.name.endswith((".safetensors", ".gguf")))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--pqal", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ds = prepare_pubmedqa(tmp / "pq", source=args.pqal, max_train=8, max_validation=4, max_test=4)
        spec = {
            "name": "export-sizes",
            "base_model_id": "bundled",
            "dataset": {"id": str(ds.out), "prompt_column": "prompt", "answer_column": "answer"},
            "hyperparameters": {"batch_size": 2, "learning_rate": 1e-3, "n_evals": 1, "lora": {"r": 4, "alpha": 8}},
            "local": {"output_dir": str(tmp / "runs"), "seed": 1, "max_steps": 1, "max_seq_length": 128},
        }
        job = train(spec, quiet=True)
        for name, options in VARIANTS.items():
            t0 = time.monotonic()
            out = export_job(job, out=tmp / "exports" / f"{len(rows)}.tar.gz", quiet=True, **options)
            seconds = time.monotonic() - t0
            with tarfile.open(out) as tar:
                manifest = json.load(tar.extractfile("ftkit_export.json"))
            check = (manifest.get("gguf") or {}).get("verification") or manifest.get("merge_check") or {}
            rows.append(
                {
                    "export": name,
                    "model_mb": round(_model_bytes(out) / 1e6, 1),
                    "archive_mb": round(out.stat().st_size / 1e6, 1),
                    "wall_s": round(seconds, 1),
                    "max_abs_logit_diff": check.get("max_abs_diff"),
                    "tolerance": check.get("tolerance"),
                    "greedy_agree": check.get("greedy_agree"),
                    "gguf_seconds": (manifest.get("gguf") or {}).get("seconds"),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    date = time.strftime("%Y-%m-%d")
    machine = {"cpu": platform.processor() or platform.machine(), "threads": os.cpu_count(), "load": os.getloadavg()}
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"export_sizes-{date}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2))
    lines = [
        "| export | model file MB | archive MB | wall s | max logit diff (allowed) | greedy |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        diff = "–" if r["max_abs_logit_diff"] is None else f"{r['max_abs_logit_diff']:.3g}"
        allowed = "greedy" if r["tolerance"] is None and r["greedy_agree"] else f"{r['tolerance'] or 0:.3g}"
        lines.append(
            f"| {r['export']} | {r['model_mb']} | {r['archive_mb']} | {r['wall_s']} | {diff} ({allowed}) "
            f"| {r['greedy_agree'] or '–'} |"
        )
    (out_dir / f"export_sizes-{date}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
