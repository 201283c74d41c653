"""The model card (README.md) of an export: base model, data, hyperparameters, final metrics, evaluation results.

The card is a ``huggingface_hub.ModelCard`` whose metadata (``ModelCardData``) follows the Hub's conventions:
``base_model``, ``library_name`` (``peft`` for an adapter), ``datasets``, ``tags`` and, for PubMedQA evaluations,
``model-index`` evaluation results; the Hub shows them and links the model to its base and dataset.
"""

from __future__ import annotations

import math

_KIND_TEXT = {
    "adapter": "a LoRA adapter (load it on top of the base model with peft)",
    "merged": "the base model with the LoRA adapter merged into its weights (loads with transformers alone)",
    "full": "a fully fine-tuned model (loads with transformers alone)",
    "gguf": (
        "the model (with the LoRA adapter merged) as one GGUF file for llama.cpp, Ollama and LM Studio, "
        "with an Ollama Modelfile"
    ),
}
_DTYPE_TEXT = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def _fmt(v) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        if not math.isfinite(v):
            return str(v)
        return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.4e}"
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v)) or "all linear layers"
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(head: tuple[str, str], rows: list[tuple[str, object]]) -> str:
    lines = [f"| {head[0]} | {head[1]} |", "|---|---|"]
    lines += [f"| {k} | {_fmt(v)} |" for k, v in rows]
    return "\n".join(lines)


def _flatten(obj, prefix: str = "", depth: int = 0) -> list[tuple[str, object]]:
    """Scalar leaves of an evaluation result as (dotted key, value), two levels deep (long lists are skipped)."""
    out = []
    for k, v in obj.items() if isinstance(obj, dict) else []:
        key = f"{prefix}{k}"
        if isinstance(v, dict) and depth < 2:
            out += _flatten(v, key + ".", depth + 1)
        elif isinstance(v, (int, float, str, bool)) or v is None:
            out.append((key, v))
    return out


def _final_metrics(metrics: list[dict]) -> list[tuple[str, object]]:
    last_train = next((r for r in reversed(metrics) if r.get("train_loss") is not None), {})
    last_eval = next((r for r in reversed(metrics) if r.get("eval_loss") is not None), {})
    last = metrics[-1] if metrics else {}
    return [
        ("optimizer steps", last.get("step")),
        ("epochs", last.get("epoch")),
        ("final train loss", last_train.get("train_loss")),
        ("final eval loss", last_eval.get("eval_loss")),
        ("final eval perplexity", last_eval.get("perplexity")),
        ("trained tokens", last.get("trained_tokens")),
        ("tokens seen", last.get("tokens_seen")),
    ]


def _gguf_usage(gguf: dict) -> str:
    return "\n".join(
        [
            "```sh",
            "# Ollama: the Modelfile sets the chat template, system prompt and stop tokens",
            "ollama create my-model -f Modelfile && ollama run my-model",
            "# llama.cpp",
            f"llama-cli -m {gguf['file']} -cnv",
            "```",
        ]
    )


def _usage(kind: str, base_ref: str, hf_repo: str | None) -> str:
    base = hf_repo or base_ref
    lines = [
        "```python",
        "import ftkit",
        "",
        'model, tokenizer = ftkit.load_exported("<this archive>.tar.gz")',
    ]
    if kind == "adapter":
        lines += [
            "",
            "# or, with peft directly from this folder / repo:",
            "from peft import AutoPeftModelForCausalLM",
            f'model = AutoPeftModelForCausalLM.from_pretrained("<this folder or repo>")  # base: {base}',
        ]
    else:
        lines += [
            "",
            "# or, with transformers directly from this folder / repo:",
            "from transformers import AutoModelForCausalLM",
            'model = AutoModelForCausalLM.from_pretrained("<this folder or repo>")',
        ]
    return "\n".join(lines + ["```"])


# datasets ftkit prepares, by the name their manifest gives -> their Hugging Face Hub dataset id
HUB_DATASETS = {"PubMedQA": "qiaojin/PubMedQA"}
_HP_KEYS = (
    "n_epochs",
    "batch_size",
    "learning_rate",
    "warmup_ratio",
    "weight_decay",
    "n_evals",
    "best_checkpoints",
    "mask_prompt_labels",
)


def model_card(
    record: dict,
    manifest: dict,
    metrics: list[dict],
    data: dict,
    prepared: dict | None,
    evaluations: dict[str, dict],
    versions: dict,
) -> str:
    """README.md text for an export (``manifest`` is the export's ftkit_export.json content)."""
    from huggingface_hub import ModelCard

    name = record.get("name") or manifest["job"]["id"]
    parts = [
        f"# {name}",
        *_about(manifest),
        *_training_data(data, prepared),
        *_hyperparameters(record),
        *_results(metrics, manifest.get("merge_check")),
        *_gguf_check(manifest.get("gguf")),
        *_evaluation_tables(evaluations),
        "## Framework versions (training)",
        "\n".join(f"- {k} {v}" for k, v in (versions.get("training") or {}).items() if v),
    ]
    card_data = _card_data(name, manifest, prepared, evaluations)
    return str(ModelCard(f"---\n{card_data.to_yaml()}\n---\n\n" + "\n\n".join(parts) + "\n"))


def _card_data(name: str, manifest: dict, prepared: dict | None, evaluations: dict[str, dict]):
    from huggingface_hub import EvalResult, ModelCardData

    base, kind = manifest["base_model"], manifest["kind"]
    dataset = HUB_DATASETS.get((prepared or {}).get("dataset"))
    results = []
    for content in evaluations.values():
        for metric in ("accuracy", "macro_f1"):
            value = content.get(metric)
            if dataset and isinstance(value, (int, float)) and not isinstance(value, bool):
                results.append(
                    EvalResult(
                        task_type="text-classification",
                        dataset_type=dataset,
                        dataset_name=f"{prepared['dataset']} ({content.get('model') or 'evaluation'})",
                        dataset_split="test",
                        metric_type="accuracy" if metric == "accuracy" else "f1",
                        metric_name=metric,
                        metric_value=value,
                    )
                )
    return ModelCardData(
        model_name=name if results else None,
        base_model=base["hf_repo"] or None,
        library_name={"adapter": "peft", "gguf": "gguf"}.get(kind, "transformers"),
        pipeline_tag="text-generation",
        datasets=[dataset] if dataset else None,
        tags=["ftkit", "lora" if kind != "full" else "full-fine-tuning", *(["gguf"] if kind == "gguf" else [])],
        eval_results=results or None,
    )


def _about(manifest: dict) -> list[str]:
    base, kind = manifest["base_model"], manifest["kind"]
    link = f" ([{base['hf_repo']}](https://huggingface.co/{base['hf_repo']}))" if base["hf_repo"] else ""
    base_text = f"**{base['name']}**" + (link or f" (`{base['ref']}`)")
    out = [f"Fine-tuned from {base_text} with ftkit. This is {_KIND_TEXT[kind]}."]
    if base["kind"] == "bundled":
        out.append(
            "The base was ftkit's bundled CPU copy of the model (dequantised from its Q4_1 GGUF "
            "file), whose weights differ slightly from the original on the Hub."
        )
    if manifest.get("dtype"):
        out.append(f"The weights are saved in {_DTYPE_TEXT[manifest['dtype']]} ({manifest['dtype']}).")
    if kind == "gguf":
        g = manifest["gguf"]
        out.append(f"The GGUF file `{g['file']}` holds the weights in {g['quant'].upper()} (norms in F32).")
        return out + ["## Usage", _gguf_usage(g)]
    return out + ["## Usage", _usage(kind, base["ref"], base["hf_repo"])]


def _training_data(data: dict, prepared: dict | None) -> list[str]:
    files, ds = data.get("files") or {}, data.get("dataset") or {}
    out = [
        "## Training data",
        f"Dataset `{ds.get('id')}` (prompt column `{ds.get('prompt_column')}`, answer column "
        f"`{ds.get('answer_column')}`).",
    ]
    lines = ["| split | file | rows used | sha256 |", "|---|---|---|---|"]
    lines += [f"| {s} | {f['file']} | {_fmt(f.get('rows_used'))} | `{f['sha256']}` |" for s, f in files.items()]
    if not files.get("validation"):
        lines.append("| validation | 1% of training rows held out | | |")
    out.append("\n".join(lines))
    if prepared:
        desc = prepared.get("dataset") or prepared.get("name")
        split_rows = ", ".join(f"{k}: {v.get('rows')}" for k, v in (prepared.get("splits") or {}).items())
        out.append(
            f"Prepared by {prepared.get('created_by', 'ftkit')}"
            + (f" from {desc}" if desc else "")
            + (f" ({split_rows} rows)" if split_rows else "")
            + "; see `dataset_manifest.json`."
        )
    return out


def _hyperparameters(record: dict) -> list[str]:
    spec = record.get("spec") or {}
    hp, local = spec.get("hyperparameters") or {}, spec.get("local") or {}
    lora = hp.get("lora") or {}
    rows = [(k, hp.get(k)) for k in _HP_KEYS]
    rows += [(f"lora.{k}", lora.get(k)) for k in ("enabled", "r", "alpha", "dropout", "trainable_modules")]
    rows += [(f"local.{k}", local.get(k)) for k in ("seed", "max_steps", "max_seq_length", "micro_batch_size")]
    rows += [
        ("max_seq_length used", record.get("max_seq_length")),
        ("device", record.get("device")),
        ("precision", record.get("precision")),
    ]
    params = record.get("parameters") or {}
    if params:
        rows.append(("trainable / total parameters", f"{params.get('trainable'):,} / {params.get('total'):,}"))
    return ["## Hyperparameters", _table(("hyperparameter", "value"), rows)]


def _results(metrics: list[dict], check: dict | None) -> list[str]:
    out = [
        "## Training results",
        _table(("metric", "value"), _final_metrics(metrics)),
        "Every logged step is in `metrics.jsonl` and `metrics.csv`.",
    ]
    if check:
        out.append(
            f"Merge check: the merged weights ({check['dtype']}) reproduce base + adapter logits "
            f"on a probe prompt within {check['max_abs_diff']:.3g} "
            f"(allowed {check['tolerance']:.3g})."
        )
    if check and check.get("trained_on_quantization", "none") != "none":
        out.append(
            f"The adapter was trained on a {check['trained_on_quantization']} quantised copy of the base "
            "(QLoRA, bitsandbytes) and merged into the unquantised base weights, so the merged model's outputs "
            "differ slightly from those of the quantised base + adapter it trained as."
        )
    return out


def _gguf_check(gguf: dict | None) -> list[str]:
    if not gguf:
        return []
    v = gguf["verification"]
    logits = f"next-token logits within {v['max_abs_diff']:.3g} of the merged model's"
    if v["tolerance"] is not None:
        logits += f" (allowed {v['tolerance']:.3g})"
    return [
        "## GGUF check",
        f"Loaded back with transformers (`gguf_file=`) before it was handed over, on {len(v['probe_prompts'])} "
        f"probe prompts: {logits}; greedy answers start alike on {v.get('first_token_agree')} and agree over "
        f"{v['greedy_tokens']} tokens on {v['greedy_agree']}; "
        "the tokenizer, its BOS/EOS/pad ids and the chat template round-trip.",
    ]


def _evaluation_tables(evaluations: dict[str, dict]) -> list[str]:
    if not evaluations:
        return []
    out = ["## Evaluation"]
    for fname, content in evaluations.items():
        flat = _flatten(content)
        body = _table(("result", "value"), flat) if flat else "(no scalar results)"
        out.append(f"`{fname}`:\n\n{body}")
    return out
