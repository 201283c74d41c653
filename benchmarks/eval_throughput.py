"""Decision scoring throughput: ftkit's one-pass label scoring vs three-candidate log-likelihood scoring.

One-pass (``ftkit.evaluate(method="score")``): one forward per row, the next-token log-probs of the
three labels' first tokens at the last prompt position. Log-likelihood (the common harness approach): one
forward per row and candidate, log P(candidate tokens | prompt) summed over its tokens, argmax over
candidates. Both read the same prompt tokens (the chat template as training renders it) on the same real
PubMedQA test rows, with the same batch size and left padding; the log-likelihood baseline also keeps only the
logits it needs (a harness that computes logits at every position is slower still). Rows are processed in
chunks, each chunk timed with both methods back to back, so load from other processes on a shared machine hits
both alike.

    python benchmarks/eval_throughput.py              # 60 stratified test rows, bundled SmolLM2, batch 8
    python benchmarks/eval_throughput.py --rows 500   # the whole official test split
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def load_average() -> float | None:
    return round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else None


def cookbook_test_rows(source: str, rows: int) -> list:
    """``rows`` stratified official PubMedQA test rows (500 = all) as the cookbook prepares them (reason answers,
    results sections), read back as evaluation rows; ``source`` a local ori_pqal.json, else ftkit's download."""
    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
    from ftkit.results.evaluation import read_eval_data

    with tempfile.TemporaryDirectory() as tmp:
        ds = prepare_pubmedqa(
            tmp,
            source=source if Path(source).is_file() else None,
            answer_style="reason",
            context="results",
            max_test=None if rows >= 500 else rows,
        )
        return read_eval_data(ds.test)


def machine(load_start: float | None) -> dict:
    import torch

    from ftkit.models.device import cpu_name

    return {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_average_start": load_start,  # other users' processes share these cores
        "load_average_end": load_average(),
    }


def candidate_tokens(tok, labels) -> dict[str, list[int]]:
    """Each label's tokens as they start a training answer ("yes. ..."), cut where the label word ends."""
    from ftkit.results.inference import ANSWER_PROBE, aligned_prefix, encode_for_answer

    out = {}
    for label in labels:
        _, ans = encode_for_answer(tok, "?", ANSWER_PROBE.format(label=label))
        k = aligned_prefix(tok, ans, label)
        out[label] = ans[:k] if k > 0 else tok(label, add_special_tokens=False)["input_ids"]
    return out


def loglik_scores(model, tok, ctx: list[list[int]], cands: dict[str, list[int]], batch_size: int):
    """log P(candidate | context) per row and candidate: one forward per (row, candidate)."""
    import torch

    from ftkit.results.inference import left_pad

    scores = [[0.0] * len(cands) for _ in ctx]
    with torch.inference_mode():
        for j, ids in enumerate(cands.values()):
            n = len(ids)
            for s in range(0, len(ctx), batch_size):
                rows = [c + ids for c in ctx[s : s + batch_size]]
                x, mask, pos = left_pad(rows, tok.pad_token_id, model.device)
                logits = model(input_ids=x, attention_mask=mask, position_ids=pos, logits_to_keep=n + 1).logits
                logp = torch.log_softmax(logits[:, :-1].float(), -1)  # positions predicting the candidate tokens
                target = torch.tensor(ids, device=logp.device).expand(len(rows), n)
                total = logp.gather(-1, target.unsqueeze(-1)).squeeze(-1).sum(-1)
                for r, v in enumerate(total.tolist()):
                    scores[s + r][j] = v
    return scores


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=60, help="stratified test rows (default 60; 500 = all)")
    p.add_argument("--model", default="bundled")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--chunk", type=int, default=16, help="rows timed with both methods back to back")
    p.add_argument("--source", default=str(ROOT.parent / "shared" / "pubmedqa" / "ori_pqal.json"))
    p.add_argument("--out", default=str(HERE / "results"))
    args = p.parse_args()
    load_start = load_average()

    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
    from ftkit.results.evaluation import read_eval_data
    from ftkit.results.inference import (
        DECISIONS,
        contexts,
        label_token_ids,
        load_for_inference,
        next_token_logprobs,
    )

    with tempfile.TemporaryDirectory() as tmp:
        ds = prepare_pubmedqa(
            tmp,
            source=args.source if Path(args.source).is_file() else None,
            max_test=None if args.rows >= 500 else args.rows,
        )
        rows = read_eval_data(ds.test)
    model, tok = load_for_inference(args.model, device="cpu")
    labels = DECISIONS
    first = label_token_ids(tok, labels)
    cands = candidate_tokens(tok, labels)
    ctx = contexts(tok, [r.prompt for r in rows])
    next_token_logprobs(model, tok, ctx[:2], list(first.values()), args.batch_size)  # warm-up (allocation)

    one, ll, t_one, t_ll = [], [], [], []
    for s in range(0, len(ctx), args.chunk):
        chunk = ctx[s : s + args.chunk]
        t = time.perf_counter()
        one += next_token_logprobs(model, tok, chunk, list(first.values()), args.batch_size)
        t_one.append(time.perf_counter() - t)
        t = time.perf_counter()
        ll += loglik_scores(model, tok, chunk, cands, args.batch_size)
        t_ll.append(time.perf_counter() - t)
        print(
            f"rows {s + len(chunk)}/{len(ctx)}: one-pass {t_one[-1]:.1f} s, log-likelihood {t_ll[-1]:.1f} s",
            flush=True,
        )

    def argmax(v):
        return labels[max(range(len(labels)), key=lambda j: v[j])]

    pred_one, pred_ll = [argmax(v) for v in one], [argmax(v) for v in ll]
    agree = sum(a == b for a, b in zip(pred_one, pred_ll, strict=True))
    single = all(len(c) == 1 for c in cands.values())
    max_diff = max(abs(a - b) for r1, r2 in zip(one, ll, strict=True) for a, b in zip(r1, r2, strict=True))
    gold = [r.gold for r in rows]
    date = time.strftime("%Y-%m-%d")
    result = {
        "date": date,
        "machine": machine(load_start),
        "settings": {**vars(args), "n_rows": len(rows), "mean_prompt_tokens": statistics.mean(map(len, ctx))},
        "candidates": {k: [tok.decode([t]) for t in v] for k, v in cands.items()},
        "all_candidates_single_token": single,
        "seconds": {"one_pass": round(sum(t_one), 2), "loglik": round(sum(t_ll), 2)},
        "rows_per_second": {
            "one_pass": round(len(rows) / sum(t_one), 3),
            "loglik": round(len(rows) / sum(t_ll), 3),
        },
        "speedup": round(sum(t_ll) / sum(t_one), 2),
        "speedup_per_chunk": [round(b / a, 2) for a, b in zip(t_one, t_ll, strict=True)],
        "agreement": agree / len(rows),
        "disagreements": len(rows) - agree,
        "max_abs_logprob_difference": max_diff,
        "accuracy": {
            "one_pass": sum(a == g for a, g in zip(pred_one, gold, strict=True)) / len(rows),
            "loglik": sum(a == g for a, g in zip(pred_ll, gold, strict=True)) / len(rows),
        },
        "predicted_counts": {
            "one_pass": {c: pred_one.count(c) for c in labels},
            "loglik": {c: pred_ll.count(c) for c in labels},
        },
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"eval_throughput-{date}.json").write_text(json.dumps(result, indent=2) + "\n")
    m = result["machine"]
    note = (
        "every candidate is one token, so both methods read the same log-probabilities"
        if single
        else "some candidates span several tokens: log-likelihood sums over them, one-pass reads the first"
    )
    lines = [
        f"# Decision scoring throughput, {date}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads, shared; load average "
        f"{m['load_average_start']} at start, {m['load_average_end']} at end), torch {m['torch']}, "
        f"Python {m['python']}.",
        f"Model {args.model}, {len(rows)} stratified rows of the official PubMedQA test split "
        f"(mean {result['settings']['mean_prompt_tokens']:.0f} prompt tokens), batch size {args.batch_size}, "
        "fp32.",
        "",
        "| method | forwards per row | seconds | rows/s | accuracy |",
        "|---|---|---|---|---|",
        f"| one-pass label scoring (ftkit) | 1 | {result['seconds']['one_pass']} | "
        f"{result['rows_per_second']['one_pass']} | {result['accuracy']['one_pass']:.3f} |",
        f"| three-candidate log-likelihood | 3 | {result['seconds']['loglik']} | "
        f"{result['rows_per_second']['loglik']} | {result['accuracy']['loglik']:.3f} |",
        "",
        f"Speed-up {result['speedup']}x (per chunk: {result['speedup_per_chunk']}). Identical predictions on "
        f"{agree}/{len(rows)} rows ({result['agreement']:.1%}); largest log-probability difference "
        f"{max_diff:.2e}. Candidates {result['candidates']}: {note}.",
    ]
    (out / f"eval_throughput-{date}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
