"""The weights of a merged or full export, checked before they are handed over: the LoRA adapter merged into a
full-precision copy of its base, or a full fine-tune, saved in the export precision (fp32, fp16 or bf16); the saved
model must reproduce the trained model's next-token logits on a probe prompt within that precision's tolerance.

The export precision defaults to the base model's half precision (:func:`default_export_dtype`); fp32 only when
asked.
"""

from __future__ import annotations

from pathlib import Path

from ftkit.export.errors import ExportError
from ftkit.models.catalog import resolve_model
from ftkit.models.loading import hub_options, load_model, quiet_loading, save_model, torch_dtype

PROBE_PROMPT = "Does regular aspirin use prevent a first heart attack? Answer yes, no or maybe."
# the largest logit difference allowed, times the reference's largest logit: fp16 keeps 3 more mantissa bits than bf16
MERGE_RTOL = {"fp32": 1e-3, "fp16": 5e-3, "bf16": 2e-2}
EXPORT_DTYPES = ("fp32", "fp16", "bf16")


def base_model_ref(record: dict) -> str:
    """What to load the job's base model from: a local model's folder, else the reference the spec named."""
    model = record.get("model") or {}
    if model.get("kind") == "local" and model.get("source"):
        return str(model["source"])
    return record["spec"]["base_model_id"]


def check_export_dtype(dtype: str) -> str:
    if dtype not in EXPORT_DTYPES:
        raise ExportError(f"--dtype {dtype!r} is not an export precision (allowed: {', '.join(EXPORT_DTYPES)})")
    return dtype


def default_export_dtype(info, config=None) -> str:
    """The base model's half precision: its training precision from the catalog (Float16 for the service's
    models), else its checkpoint's dtype (``config``): bf16 stays bf16, anything else is saved as fp16 (the
    service's export precision). fp32 only when asked."""
    precision = info.precision if info.kind == "catalog" else None
    if precision in (None, "auto", "float32"):
        precision = getattr(config, "dtype", None) or getattr(config, "torch_dtype", None) or info.precision
    return "bf16" if str(precision).replace("torch.", "") in ("bfloat16", "bf16") else "fp16"


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


def _save_checked(model, tokenizer, reference, folder: Path, dtype: str, what: str, against: tuple[str, str]) -> dict:
    """Save ``model`` in ``dtype`` and check the saved folder, loaded on its own, against ``reference`` logits;
    ``against`` names what the reference is and what to do instead when the check fails."""
    import torch
    from transformers import AutoModelForCausalLM

    save_model(model.to(torch_dtype(dtype)), folder)
    tokenizer.save_pretrained(folder)
    del model
    # check what was written, not what is in memory: the saved folder must stand on its own
    with quiet_loading():
        saved = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    check = compare_logits(reference, probe_logits(saved, tokenizer), MERGE_RTOL[dtype])
    if not check["ok"]:
        raise ExportError(
            f"{what} ({dtype}) does not reproduce {against[0]}: next-token logits on the probe prompt differ by up "
            f"to {check['max_abs_diff']:.3g} (allowed {check['tolerance']:.3g}); nothing was exported. {against[1]}"
        )
    return {**check, "dtype": dtype, "probe_prompt": PROBE_PROMPT}


def save_full_model(job, folder: Path, dtype: str, quiet: bool = False) -> dict:
    """Save a full fine-tune's model in ``dtype`` in ``folder``, checked against the trained weights."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if not quiet:
        print(f"ftkit: saving the model of {job.id!r} as {dtype}", flush=True)
    with quiet_loading():
        model = AutoModelForCausalLM.from_pretrained(job.model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    reference = probe_logits(model, tokenizer)
    against = ("the trained model", "Export it in fp32 (--dtype fp32).")
    return _save_checked(model, tokenizer, reference, folder, dtype, f"the model of job {job.id!r}", against)


def merge_into(job, folder: Path, dtype: str | None = None, quiet: bool = False) -> dict:
    """Merge the job's LoRA adapter into a full-precision copy of its base and save it (safetensors, ``dtype``,
    default :func:`default_export_dtype`) in ``folder``; the saved model's logits must match base + adapter on a
    probe prompt, or :class:`ExportError`.
    """
    from peft import PeftModel
    from transformers import AutoConfig, AutoTokenizer

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
    save_dtype = check_export_dtype(dtype) if dtype else default_export_dtype(info, config)
    trained_on = (rec.get("spec") or {}).get("local", {}).get("quantization") or "none"
    if not quiet:
        qlora = f"; the adapter trained on a {trained_on} base, merged unquantised" if trained_on != "none" else ""
        print(f"ftkit: merging the adapter of {job.id!r} into {ref} (saved as {save_dtype}{qlora})", flush=True)
    # the base loads unquantised (fp32) even when the adapter trained on a quantised copy (QLoRA): merging into
    # quantised weights would round the update away or break the export
    base, _, _ = load_model(ref, device="cpu", dtype="fp32")
    tokenizer = AutoTokenizer.from_pretrained(job.model_dir)
    with quiet_loading():
        model = PeftModel.from_pretrained(base, job.model_dir).eval()
    reference = probe_logits(model, tokenizer)
    merged = model.merge_and_unload()
    del model, base
    against = ("base + adapter", "Export the adapter instead (without --merged).")
    check = _save_checked(merged, tokenizer, reference, folder, save_dtype, f"merged model of job {job.id!r}", against)
    return {**check, "trained_on_quantization": trained_on}
