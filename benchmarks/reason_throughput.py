"""Reason-method scoring throughput (``ftkit evaluate --method reason``, the cookbook's evaluation and its in-training
task metrics) on the cookbook's prompts (reason answers, results sections) of official PubMedQA test rows.

Contenders, each run as ``(model, tokenizer, prompts, labels, marker, max_new_tokens, batch_size)``:
- ``ftkit``: :func:`ftkit.results.reasoning.score_after_reasoning` (rows decoded in slots, each freed for the next
  row when its row is done; at least ``--batch-size`` slots, default 8 as ``ftkit evaluate``, more where the KV
  cache budget allows: the table says how many);
- ``ftkit_bf16``: the same on a bf16 copy of the model (an approximate path; on CPUs with native bf16 only);
- ``before``: what ftkit ran before (``model.generate`` on batches of 8, labels scored from its KV cache;
  ``_reason_before.py``);
- ``two_pass``: generate, then a second full pass over prompt and reasoning (the reference implementation).

Rows are processed in chunks (``--chunk``, default 125: four for the 500 official rows), each chunk timed with every
contender back to back, the order rotating from chunk to chunk, so load from other processes hits them alike. A chunk
is one call, as ``ftkit evaluate`` makes one call for the whole file: chunks much shorter than that would time the
slots filling and draining more often than a real evaluation does. Predictions, log-probabilities and reasoning are
compared row by row with the first contender given to ``--against`` (default ``before``); every differing row is
listed.

    python benchmarks/reason_throughput.py --model runs/<job>    # a tuned job (writes its reasoning, then Answer:)
    python benchmarks/reason_throughput.py --rows 96 --contenders ftkit,before
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from _reason_before import score_after_reasoning_generate
from eval_throughput import cookbook_test_rows, load_average, machine

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MARKER = "Answer:"


def contenders(batch_size: int):
    from ftkit.results.reasoning import score_after_reasoning, score_after_reasoning_twice

    return {  # name -> (function, rows per batch)
        "ftkit": (score_after_reasoning, batch_size),
        "ftkit_bf16": (score_after_reasoning, batch_size),
        "before": (score_after_reasoning_generate, 8),
        "two_pass": (score_after_reasoning_twice, 8),
    }


def run(args, rows) -> dict:
    from ftkit.results.inference import DECISIONS, load_for_inference

    every = contenders(args.batch_size)
    names = args.contenders.split(",")
    model, tok = load_for_inference(args.model, device="cpu")
    models = {name: model for name in names}
    if "ftkit_bf16" in names:
        import copy

        import torch

        models["ftkit_bf16"] = copy.deepcopy(model).to(torch.bfloat16)
    prompts = [r.prompt for r in rows]
    for name in names:  # warm-up (allocation, thread pool, code paths)
        every[name][0](models[name], tok, prompts[:2], DECISIONS, MARKER, 4, 2)
    found = {name: ([], [], []) for name in names}
    seconds = {name: [] for name in names}
    for n, s in enumerate(range(0, len(prompts), args.chunk)):
        chunk = prompts[s : s + args.chunk]
        for name in names[n % len(names) :] + names[: n % len(names)]:
            fn, batch = every[name]
            t = time.perf_counter()
            out = fn(models[name], tok, chunk, DECISIONS, MARKER, args.max_new_tokens, batch)
            seconds[name].append(time.perf_counter() - t)
            for acc, part in zip(found[name], out, strict=True):
                acc.extend(part)
        print(f"rows {s + len(chunk)}/{len(prompts)}: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in seconds.items()))
    return {
        "found": found,
        "seconds": seconds,
        "batch": {k: _batch(k, every[k][1], model, tok, prompts, args) for k in names},
    }


def _batch(name: str, batch: int, model, tok, prompts, args) -> str:
    """What the table says under "rows per batch": the ftkit contenders' slots for the first chunk."""
    if not name.startswith("ftkit"):
        return str(batch)
    from ftkit.results.decoding import slot_count
    from ftkit.results.inference import contexts

    ctx = contexts(tok, prompts[: args.chunk])
    return f"{slot_count(model, ctx, args.max_new_tokens, batch)} slots"


def compare(rows, found, name: str, ref: str) -> dict:
    (pa, la, ra), (pb, lb, rb) = found[name], found[ref]
    differ = [
        {"pmid": r.id, name: a, ref: b, f"{name}_logprobs": x, f"{ref}_logprobs": y}
        for r, a, b, x, y in zip(rows, pa, pb, la, lb, strict=True)
        if a != b
    ]
    return {
        "identical_predictions": len(rows) - len(differ),
        "differences": differ,
        "identical_reasoning": sum(a == b for a, b in zip(ra, rb, strict=True)),
        "max_abs_logprob_difference": max(
            abs(u - v) for x, y in zip(la, lb, strict=True) for u, v in zip(x, y, strict=True)
        ),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=64, help="stratified test rows (500 = all)")
    p.add_argument("--model", default="bundled", help="a model reference, job folder or export archive")
    p.add_argument("--contenders", default="ftkit,before", help="from ftkit, ftkit_bf16, before, two_pass")
    p.add_argument("--batch-size", type=int, default=8, help="rows decoded together by the ftkit contender")
    p.add_argument("--against", default="before", help="the contender the others are compared with")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--chunk", type=int, default=125, help="rows timed with every contender back to back")
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    load_start = load_average()
    rows = cookbook_test_rows(args.source, args.rows)
    r = run(args, rows)
    gold, found = [x.gold for x in rows], r["found"]
    total = {k: sum(v) for k, v in r["seconds"].items()}
    ref = args.against if args.against in total else next(iter(total))
    date = time.strftime("%Y-%m-%d")
    result = {
        "date": date,
        "machine": machine(load_start),
        "settings": {**vars(args), "n_rows": len(rows), "rows_per_batch": r["batch"]},
        "seconds": {k: round(v, 2) for k, v in total.items()},
        "seconds_per_chunk": {k: [round(x, 2) for x in v] for k, v in r["seconds"].items()},
        "rows_per_second": {k: round(len(rows) / v, 3) for k, v in total.items()},
        "speedup_vs_" + ref: {k: round(total[ref] / v, 2) for k, v in total.items()},
        "median_chunk_ratio_vs_" + ref: {
            k: round(statistics.median(a / b for a, b in zip(r["seconds"][ref], v, strict=True)), 2)
            for k, v in r["seconds"].items()
        },
        "agreement_with_" + ref: {k: compare(rows, r["found"], k, ref) for k in total if k != ref},
        "accuracy": {k: sum(a == g for a, g in zip(v[0], gold, strict=True)) / len(rows) for k, v in found.items()},
        "mean_reasoning_chars": {k: statistics.mean(len(t) for t in v[2]) for k, v in found.items()},
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"reason_throughput-{date}.json").write_text(json.dumps(result, indent=2) + "\n")
    (out / f"reason_throughput-{date}.md").write_text(report(result, ref))
    print(report(result, ref))
    return 0


def report(res: dict, ref: str) -> str:
    m, st = res["machine"], res["settings"]
    lines = [
        f"# Reason-method scoring throughput, {res['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads; load average "
        f"{m['load_average_start']} at start, {m['load_average_end']} at end), torch {m['torch']}.",
        f"Model {st['model']}, {st['n_rows']} stratified official PubMedQA test rows (the cookbook's prompts: reason "
        f"answers, results sections), up to {st['max_new_tokens']} new tokens, fp32 unless named; chunks of "
        f"{st['chunk']} rows timed with every contender back to back, order rotating.",
        "",
        f"| contender | rows per batch | seconds | s/row | rows/s | speed-up vs {ref} (total; median chunk) | "
        "predictions equal | reasoning equal | accuracy |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    agree = res[f"agreement_with_{ref}"]
    for k, sec in res["seconds"].items():
        a = agree.get(k)
        same = f"{a['identical_predictions']}/{st['n_rows']}" if a else "(reference)"
        why = f"{a['identical_reasoning']}/{st['n_rows']}" if a else ""
        lines.append(
            f"| {k} | {st['rows_per_batch'][k]} | {sec} | {sec / st['n_rows']:.3f} | {res['rows_per_second'][k]} | "
            f"{res['speedup_vs_' + ref][k]}x; {res['median_chunk_ratio_vs_' + ref][k]}x | {same} | {why} | "
            f"{res['accuracy'][k]:.3f} |"
        )
    lines.append("")
    for k, a in agree.items():
        lines.append(
            f"- {k} vs {ref}: largest log-probability difference {a['max_abs_logprob_difference']:.2e}; "
            f"differing predictions: {a['differences'] or 'none'}"
        )
    lines += [
        "",
        f"Run: `python benchmarks/reason_throughput.py --rows {st['rows']} --model {st['model']} "
        f"--contenders {st['contenders']} --against {st['against']} --batch-size {st['batch_size']} "
        f"--chunk {st['chunk']}`",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
