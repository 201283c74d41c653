"""The markdown report of train_throughput.py: per-contender medians, tokens, ratios, FLOP shares."""

from __future__ import annotations


def _mm(s: dict, key: str, fmt: str) -> str:
    """'median (min–max)' of one metric, or n/a where a contender did not report it."""
    st = s.get(key)
    if st is None:
        return "n/a"
    if st["n"] == 1 or st["min"] == st["max"]:
        return format(st["median"], fmt)
    return f"{format(st['median'], fmt)} ({format(st['min'], fmt)}–{format(st['max'], fmt)})"


def _header(result: dict) -> list[str]:
    m, st, d = result["machine"], result["settings"], result["data"]
    gpu = f", GPU {m['cuda_device']}" if m["cuda_device"] else ""
    cap = f" capped at {st['max_steps']} steps" if st["max_steps"] else ""
    return [
        f"# Training throughput: ftkit vs TRL SFTTrainer vs plain Trainer, {result['date']}",
        "",
        f"Machine: {m['cpu']}, {m['cores']} cores ({m['torch_threads']} torch threads, OMP_NUM_THREADS="
        f"{m['omp_num_threads']}, load average {m['load_average_at_start']} at start), CPU flags "
        f"{', '.join(m['cpu_flags']) or 'none of note'}, native bf16 {m['native_bf16']}{gpu}; torch "
        f"{m['torch']}, " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
        "",
        f"Job: bundled SmolLM2-135M-Instruct, LoRA r 8 / alpha 16 on all linear layers, {d['train_rows']} "
        "PubMedQA "
        f"training rows (official split), learning rate {st['lr']}, effective batch {st['batch_size']}, "
        "max length "
        f"{st['max_length']}, 1 epoch{cap}, {d['validation_rows']} validation rows, device {st['device']}. "
        f"{st['repeats']} fresh-process run(s) per contender, alternated; median (min–max).",
    ]


def render(result: dict) -> str:
    summary = result["summary"]
    lines = _header(result) + [
        "",
        "| contender | precision | batching | grad. ckpt | steps | wall s | train s | trained tok/s | real "
        "tok/s "
        "| peak RSS MB | eval loss (same fn) | own eval loss |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        if "error" in s:
            lines.append(f"| {name} | {s['error']} |" + " |" * 10)
            continue
        f = s["facts"]
        lines.append(
            f"| {name} | {f['precision']} | {f['batching']} | "
            f"{'on' if f['gradient_checkpointing'] else 'off'} | "
            f"{s['steps']['median']:.0f} | {_mm(s, 'wall_s', '.1f')} | {_mm(s, 'train_s', '.1f')} | "
            f"{_mm(s, 'trained_tokens_per_s', '.1f')} | {_mm(s, 'real_tokens_per_s', '.1f')} | "
            f"{_mm(s, 'peak_rss_mb', '.0f')} | {_mm(s, 'common_eval_loss', '.4f')} | "
            f"{_mm(s, 'own_eval_loss', '.4f')} |"
        )
    lines += [
        "",
        "Wall = process start to the adapter saved (imports, model load, data preparation, training, the "
        "trainer's own evaluation). Train = first optimizer step's start to the last one's end. Trained "
        "tokens "
        "= labels that are prediction targets after the shift; real = non-pad tokens; both counted from the "
        "actual training batches, the same way for every contender. Eval loss (same fn) = mean "
        "answer-token NLL "
        "of every contender's saved adapter on the validation rows, encoded by one function (ftkit's "
        "chat-template "
        "encoding, prompt masked), fp32; own eval loss = the trainer's own evaluation (n/a or nan where its "
        "truncation left a batch without any label).",
        "",
        "| contender | trained / real / processed tokens per run | rows as the contender trained them |",
        "|---|---|---|",
    ]
    for name, s in summary.items():
        if "error" not in s:
            lines.append(
                f"| {name} | {s['trained_tokens']['median']:.0f} / {s['real_tokens']['median']:.0f} / "
                f"{s['processed_tokens']['median']:.0f} | {s['facts']['data_rows']} |"
            )
    if any("ratio_to_trl" in s for s in summary.values()):
        lines += [
            "",
            "Ratios to TRL (medians; above 1 = more tokens/s, or more time/memory, than TRL):",
            "",
            "| contender | real tok/s | trained tok/s | train time | wall time | peak RSS |",
            "|---|---|---|---|---|---|",
        ]
        for name, s in summary.items():
            r = s.get("ratio_to_trl")
            if r:
                lines.append(
                    f"| {name} | {r['real_tokens_per_s']:.2f}x | {r['trained_tokens_per_s']:.2f}x | "
                    f"{r['train_s']:.2f}x | {r['wall_s']:.2f}x | {r['peak_rss_mb']:.2f}x |"
                )
    pk = result["peaks"]
    sq32, sq16 = pk["fp32"]["square_size"], pk["bf16"]["square_size"]
    lines += [
        "",
        "## Achieved FLOP/s against this machine's matmul peak",
        "",
        "| matmul | fp32 GFLOP/s | bf16 GFLOP/s |",
        "|---|---|---|",
        f"| square ({sq32}^3 fp32, {sq16}^3 bf16) | {pk['fp32']['square']} | {pk['bf16']['square']} |",
        f"| 2048 x 576 x 1536 (the model's MLP shape) | {pk['fp32']['model_576x1536']} | "
        f"{pk['bf16']['model_576x1536']} |",
        "",
        "Model FLOP/s = model FLOPs (`ftkit.train.flops.training_flops`: the decoder layers' matmuls on every real "
        "token, causal attention scores on the pairs each row attends, the LM head on target positions only, the "
        "LoRA adapters; backward 1x for frozen matmuls, 2x for attention and the adapters) / train time. Work a "
        "contender does beyond that (logits of prompt positions, padding, recomputation) is not counted. Share = "
        "against the peak of the precision the contender trained in.",
        "",
        "| contender | model GFLOP/s | share of square peak | share of model-shape peak |",
        "|---|---|---|---|",
    ]
    for name, s in summary.items():
        if "error" not in s:
            sh = s.get("share_of_peak", {})
            lines.append(
                f"| {name} | {_mm(s, 'model_gflops', '.1f')} | {sh.get('square', float('nan')):.1%} | "
                f"{sh.get('model_576x1536', float('nan')):.1%} |"
            )
    lines += _steady(result)
    lines += ["", f"Untrained base model, same evaluation: eval loss {result['base_model_eval_loss']:.4f}."]
    if result.get("trl_defaults"):
        lines += ["", "## TRL settings in effect (SFTConfig defaults unless the job above sets them)", ""]
        lines += [f"- `{k}`: {v!r}" for k, v in result["trl_defaults"].items()]
    return "\n".join(lines) + "\n"


def _steady(result: dict) -> list[str]:
    """The steady-state table (--warmup-steps): the steps after the warm-up, ratios to the fp32 and plain runs."""
    summary = result["summary"]
    if not any("steady_s" in s for s in summary.values()):
        return []
    warm = result["settings"]["warmup_steps"]
    lines = [
        "",
        f"## Steady state: the optimizer steps after the first {warm}",
        "",
        "| contender | precision | steps timed | seconds | trained tok/s | real tok/s | model GFLOP/s | share of "
        "model-shape peak | x trl_fp32 (trained tok/s) | x plain | eval loss x trl_fp32 |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, s in summary.items():
        if "error" in s or "steady_s" not in s:
            continue
        share = (s.get("steady_share_of_peak") or {}).get("model_576x1536")
        r32, rpl = s.get("ratio_to_trl_fp32", {}), s.get("ratio_to_plain", {})

        def x(r, k):
            return f"{r[k]:.2f}x" if k in r else "n/a"

        lines.append(
            f"| {name} | {s['facts']['precision']} | {s['steady_steps']['median']:.0f} | {_mm(s, 'steady_s', '.1f')} "
            f"| {_mm(s, 'steady_trained_tokens_per_s', '.1f')} | {_mm(s, 'steady_real_tokens_per_s', '.1f')} | "
            f"{_mm(s, 'steady_model_gflops', '.1f')} | {f'{share:.1%}' if share is not None else 'n/a'} | "
            f"{x(r32, 'steady_trained_tokens_per_s')} | {x(rpl, 'steady_trained_tokens_per_s')} | "
            f"{x(r32, 'common_eval_loss')} |"
        )
    lean = (summary.get("ftkit") or {}).get("ratio_to_ftkit_peft_lora")
    if lean and "steady_trained_tokens_per_s" in lean:
        lines += [
            "",
            f"ftkit's lean LoRA forward (`ftkit.models.lora_forward`) against peft's own (ftkit_peft_lora): "
            f"{lean['steady_trained_tokens_per_s']:.3f}x steady trained tokens/s, eval loss "
            f"{lean['common_eval_loss']:.4f}x.",
        ]
    return lines
