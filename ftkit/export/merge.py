"""Merging a LoRA adapter into a full-precision copy of its base model, checked before it is handed over: the
saved merged model must reproduce base + adapter's next-token logits on a probe prompt."""

from __future__ import annotations

from pathlib import Path

from ftkit.export.errors import ExportError
from ftkit.models.catalog import resolve_model
from ftkit.models.loading import hub_options, load_model, quiet_loading, save_model

PROBE_PROMPT = "Does regular aspirin use prevent a first heart attack? Answer yes, no or maybe."
MERGE_RTOL = {"fp32": 1e-3, "bf16": 2e-2}


def base_model_ref(record: dict) -> str:
    """What to load the job's base model from: a local model's folder, else the reference the spec named."""
    model = record.get("model") or {}
    if model.get("kind") == "local" and model.get("source"):
        return str(model["source"])
    return record["spec"]["base_model_id"]


def _base_dtype(config) -> str:
    dtype = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None)
    return "bf16" if str(dtype).replace("torch.", "") == "bfloat16" else "fp32"


def probe_logits(model, tokenizer, prompt: str = PROBE_PROMPT):
    """Logits (fp32, every position) of ``model`` on a chat-formatted probe prompt."""
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    device = next(model.parameters()).device
    with torch.no_grad():
        return model(**{k: v.to(device) for k, v in ids.items()}).logits.float().cpu()


def compare_logits(reference, other, rtol: float) -> dict:
    """Largest absolute logit difference, and the tolerance: ``rtol`` times the reference's largest logit."""
    diff = float((reference - other).abs().max())
    tol = rtol * max(1.0, float(reference.abs().max()))
    return {"max_abs_diff": diff, "tolerance": tol, "ok": diff <= tol}


def merge_into(job, folder: Path, quiet: bool = False) -> dict:
    """Merge the job's LoRA adapter into a full-precision copy of its base and save it (safetensors) in
    ``folder``; the saved model's logits must match base + adapter on a probe prompt, or :class:`ExportError`.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    rec = job.record
    ref = base_model_ref(rec)
    info = resolve_model(ref)
    config = AutoConfig.from_pretrained(info.source, **hub_options(info))
    quant = getattr(config, "quantization_config", None)
    if quant:
        method = quant.get("quant_method") if isinstance(quant, dict) else getattr(quant, "quant_method", "?")
        raise ExportError(
            f"base model {ref!r} is quantised ({method}); a LoRA adapter is never merged into quantised "
            "weights. Export the adapter (without --merged), or merge into the unquantised original of the "
            "model."
        )
    save_dtype = _base_dtype(config)
    if not quiet:
        print(f"ftkit: merging the adapter of {job.id!r} into {ref} (saved as {save_dtype})", flush=True)
    base, _, _ = load_model(ref, device="cpu", dtype="fp32")
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    with quiet_loading():
        model = PeftModel.from_pretrained(base, job.model_dir).eval()
    reference = probe_logits(model, tokenizer)
    merged = model.merge_and_unload()
    if save_dtype == "bf16":
        merged = merged.to(torch.bfloat16)
    save_model(merged, folder)
    tokenizer.save_pretrained(folder)
    del model, merged, base
    # check what was written, not what is in memory: the saved folder must stand on its own
    with quiet_loading():
        saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    check = compare_logits(reference, probe_logits(saved, tokenizer), MERGE_RTOL[save_dtype])
    if not check["ok"]:
        raise ExportError(
            f"merged model of job {job.id!r} does not reproduce base + adapter: next-token logits on the "
            f"probe prompt differ by up to {check['max_abs_diff']:.3g} (allowed {check['tolerance']:.3g}); "
            "nothing was exported. Export the adapter instead (without --merged)."
        )
    return {**check, "dtype": save_dtype, "probe_prompt": PROBE_PROMPT}
