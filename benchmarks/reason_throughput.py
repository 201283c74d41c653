"""Reason-method scoring throughput (``ftkit evaluate --method reason``, the cookbook's evaluation and its in-training
task metrics): scoring from generation's KV cache against the two-pass reference (generate, then run prompt and
reasoning through the model again), on the cookbook's prompts (reason answers, results sections) of official
PubMedQA test rows.

Rows are processed in chunks, each chunk timed with both implementations back to back (the order alternating from
chunk to chunk), so load from other processes hits both alike. Predictions and log-probabilities are compared row by
row; every differing row is listed.

    python benchmarks/reason_throughput.py                       # 32 stratified test rows, the bundled model
    python benchmarks/reason_throughput.py --model runs/<job>    # a tuned job (writes its reasoning, then Answer:)
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from eval_throughput import cookbook_test_rows, load_average, machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARKER = "Answer:"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=32, help="stratified test rows (500 = all)")
    p.add_argument("--model", default="bundled", help="a model reference, job folder or export archive")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--chunk", type=int, default=8, help="rows timed with both implementations back to back")
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    load_start = load_average()

    from ftkit.results.inference import DECISIONS, load_for_inference
    from ftkit.results.reasoning import score_after_reasoning, score_after_reasoning_twice

    rows = cookbook_test_rows(args.source, args.rows)
    model, tok = load_for_inference(args.model, device="cpu")
    prompts = [r.prompt for r in rows]
    impls = {"cache": score_after_reasoning, "two_pass": score_after_reasoning_twice}
    score_after_reasoning(model, tok, prompts[:1], DECISIONS, MARKER, 4, 1)  # warm-up (allocation, thread pool)

    found = {name: ([], [], []) for name in impls}
    seconds = {name: [] for name in impls}
    for n, s in enumerate(range(0, len(prompts), args.chunk)):
        chunk = prompts[s : s + args.chunk]
        for name in list(impls)[:: 1 if n % 2 == 0 else -1]:
            t = time.perf_counter()
            preds, logps, reasons = impls[name](
                model, tok, chunk, DECISIONS, MARKER, args.max_new_tokens, args.batch_size
            )
            seconds[name].append(time.perf_counter() - t)
            for acc, part in zip(found[name], (preds, logps, reasons), strict=True):
                acc.extend(part)
        print(
            f"rows {s + len(chunk)}/{len(prompts)}: cache {seconds['cache'][-1]:.1f} s, two-pass "
            f"{seconds['two_pass'][-1]:.1f} s",
            flush=True,
        )

    fast, slow = found["cache"], found["two_pass"]
    differ = [
        {"pmid": r.id, "cache": a, "two_pass": b, "cache_logprobs": la, "two_pass_logprobs": lb}
        for r, a, b, la, lb in zip(rows, fast[0], slow[0], fast[1], slow[1], strict=True)
        if a != b
    ]
    max_diff = max(abs(x - y) for la, lb in zip(fast[1], slow[1], strict=True) for x, y in zip(la, lb, strict=True))
    gold = [r.gold for r in rows]
    date = time.strftime("%Y-%m-%d")
    total = {k: sum(v) for k, v in seconds.items()}
    result = {
        "date": date,
        "machine": machine(load_start),
        "settings": {**vars(args), "n_rows": len(rows)},
        "seconds": {k: round(v, 2) for k, v in total.items()},
        "rows_per_second": {k: round(len(rows) / v, 3) for k, v in total.items()},
        "speedup": round(total["two_pass"] / total["cache"], 2),
        "speedup_per_chunk": [round(b / a, 2) for a, b in zip(seconds["cache"], seconds["two_pass"], strict=True)],
        "identical_predictions": len(rows) - len(differ),
        "differences": differ,
        "same_reasoning": fast[2] == slow[2],
        "max_abs_logprob_difference": max_diff,
        "mean_reasoning_chars": statistics.mean(len(t) for t in fast[2]),
        "accuracy": sum(a == g for a, g in zip(fast[0], gold, strict=True)) / len(rows),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"reason_throughput-{date}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    lines = [
        f"# Reason-method scoring throughput, {date}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads; load average "
        f"{m['load_average_start']} at start, {m['load_average_end']} at end), torch {m['torch']}.",
        f"Model {args.model}, {len(rows)} stratified official PubMedQA test rows (the cookbook's prompts: reason "
        f"answers, results sections), batch size {args.batch_size}, up to {args.max_new_tokens} new tokens, fp32.",
        "",
        "| implementation | seconds | rows/s |",
        "|---|---|---|",
        f"| scoring from the generation cache (ftkit) | {result['seconds']['cache']} | "
        f"{result['rows_per_second']['cache']} |",
        f"| generate, then a second full pass (before) | {result['seconds']['two_pass']} | "
        f"{result['rows_per_second']['two_pass']} |",
        "",
        f"Speed-up {result['speedup']}x (per chunk, alternated: {result['speedup_per_chunk']}). Identical "
        f"predictions on {result['identical_predictions']}/{len(rows)} rows, identical reasoning "
        f"{result['same_reasoning']}; largest log-probability difference {max_diff:.2e}. Mean reasoning "
        f"{result['mean_reasoning_chars']:.0f} characters. Differences: {differ or 'none'}.",
        "",
        f"Run: `python benchmarks/reason_throughput.py --rows {args.rows} --model {args.model}`.",
    ]
    (out / f"reason_throughput-{date}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
