"""Faster label scoring, the candidates: ``ftkit evaluate``'s one-pass scoring of the bundled model in fp32 against
int8 dynamic quantisation of the linear layers (all of them, or the decoder's only, LM head kept), a bf16 copy of the
model, and ``torch.compile`` of its forward (dynamic shapes). Same stratified official PubMedQA test rows for each,
the order alternated over ``--repeats``; reports seconds (median), the speed-up over fp32, the predictions that agree
with fp32's and the largest log-probability difference. Nothing here is used by ftkit unless it is both faster and
(nearly) as exact: this script is how that was decided.

    python benchmarks/scoring_options.py [--rows 48] [--repeats 2]
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import time
import warnings
from pathlib import Path

from eval_throughput import cookbook_test_rows, load_average, machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def variants(model) -> dict:
    """name -> (model to score with, seconds spent preparing it)."""
    import torch

    out = {"fp32": (model, 0.0)}
    t = time.perf_counter()
    q = torch.ao.quantization.quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8)
    out["int8 (all linears)"] = (q, time.perf_counter() - t)
    t = time.perf_counter()
    body = copy.deepcopy(model)
    body.model = torch.ao.quantization.quantize_dynamic(body.model, {torch.nn.Linear}, dtype=torch.qint8)
    out["int8 (decoder, LM head fp32)"] = (body, time.perf_counter() - t)
    out["bf16 weights"] = (copy.deepcopy(model).to(torch.bfloat16), 0.0)
    compiled = copy.deepcopy(model)
    compiled.forward = torch.compile(compiled.forward, dynamic=True)
    out["torch.compile (dynamic)"] = (compiled, 0.0)  # its compile time is measured by the warm-up below
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=48)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    load_start = load_average()

    from ftkit.results.inference import load_for_inference, score_labels

    prompts = [r.prompt for r in cookbook_test_rows(args.source, args.rows)]
    model, tok = load_for_inference("bundled", device="cpu")
    models = variants(model)
    prepare = {}
    for name, (m, setup_s) in models.items():  # warm-up: allocation, thread pool, and the compile
        t = time.perf_counter()
        score_labels(m, tok, prompts[:8])
        prepare[name] = round(setup_s + time.perf_counter() - t, 1)
    seconds: dict[str, list[float]] = {n: [] for n in models}
    found = {}
    for rep in range(args.repeats):
        order = list(models) if rep % 2 == 0 else list(reversed(models))
        for name in order:
            t = time.perf_counter()
            found[name] = score_labels(models[name][0], tok, prompts, batch_size=8)
            seconds[name].append(round(time.perf_counter() - t, 2))
    ref_pred, ref_lp = found["fp32"]
    rows = []
    for name in models:
        pred, lp = found[name]
        rows.append(
            {
                "variant": name,
                "seconds": seconds[name],
                "median_s": statistics.median(seconds[name]),
                "speedup": statistics.median(seconds["fp32"]) / statistics.median(seconds[name]),
                "agree": sum(a == b for a, b in zip(pred, ref_pred, strict=True)),
                "max_logprob_diff": max(
                    abs(x - y) for a, b in zip(lp, ref_lp, strict=True) for x, y in zip(a, b, strict=True)
                ),
                "warmup_s": prepare[name],
            }
        )
    date = time.strftime("%Y-%m-%d")
    result = {"date": date, "machine": machine(load_start), "rows": len(prompts), "variants": rows}
    stem = Path(args.out) / f"scoring_options-{date}"
    stem.parent.mkdir(parents=True, exist_ok=True)
    stem.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        f"# Label scoring options, {date}",
        "",
        f"{m['cpu']}, {m['cores']} cores, torch {m['torch']}; load average {m['load_average_start']} at start, "
        f"{m['load_average_end']} at end. Bundled SmolLM2-135M, {len(prompts)} stratified official test rows "
        f"(the cookbook's prompts), batch 8, {args.repeats} alternated repeats.",
        "",
        "| variant | seconds (median) | speed-up | predictions equal to fp32 | largest log-prob difference | "
        "warm-up s |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['variant']} | {r['median_s']:.1f} | {r['speedup']:.2f}x | {r['agree']}/{len(prompts)} | "
            f"{r['max_logprob_diff']:.2g} | {r['warmup_s']:.0f} |"
        )
    lines += ["", f"Run: `python benchmarks/scoring_options.py --rows {args.rows} --repeats {args.repeats}`"]
    md = "\n".join(lines) + "\n"
    stem.with_suffix(".md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
