"""Models for inference: load one from a job, an export or a model reference; score label words; generate.

Scoring and generation build each prompt exactly the way training encodes a row
(:func:`ftkit.data.encoding.split_chat_text`: chat template, generation prompt, tokenised without extra special
tokens), so the position whose next-token logits are read is where training teaches the decision word.
"""

from __future__ import annotations

import os
import re
import warnings
from pathlib import Path

from ftkit.data.encoding import split_chat_text
from ftkit.errors import FtkitError, UsageError
from ftkit.job.store import JOB_FILE_SUFFIXES, Job, JobError, get_job
from ftkit.job.store import jobs_dir as default_jobs_dir
from ftkit.models.catalog import UnknownModelError, resolve_model
from ftkit.models.device import inference_dtype, pick_device
from ftkit.models.exported import load_exported
from ftkit.models.loading import ensure_pad_token, load_model, quiet_loading

DECISIONS = ("yes", "no", "maybe")
# How a label's first token is found: the answer as PubMedQA training data renders it ("yes. <long answer>").
ANSWER_PROBE = "{label}. The abstract supports this conclusion."
_DECISION_WORD = re.compile(r"\b(yes|no|maybe)\b", re.IGNORECASE)


class ModelRefError(FtkitError, ValueError):
    """A model reference that is neither a job, an export archive nor a model."""


# ------------------------------------------------------------------------------------------------- loading


def _prepare(model, tokenizer):
    ensure_pad_token(tokenizer, model)
    tokenizer.padding_side = "left"  # generation continues from the last position of every row
    model.eval()
    return model, tokenizer


def _load_job(job, device: str):
    from transformers import AutoTokenizer

    rec = job.record
    status = rec.get("status")
    if not job.model_dir.is_dir():
        raise JobError(f"job {job.id!r} is {status} and has no model yet ({job.model_dir} does not exist)")
    if status != "completed":
        warnings.warn(f"job {job.id!r} is {status}; evaluating the model it saved in {job.model_dir}", stacklevel=3)
    spec = rec.get("spec") or {}
    trust = bool((spec.get("local") or {}).get("trust_remote_code", False))
    result = rec.get("result") or {}
    lora = result.get("lora", (job.model_dir / "adapter_config.json").is_file())
    dtype = inference_dtype(device)
    if not lora:
        model, tok, _ = load_model(str(job.model_dir.resolve()), device=device, dtype=dtype, trust_remote_code=trust)
        return model, tok
    from peft import PeftModel

    base = spec.get("base_model_id")
    if not base:
        raise JobError(f"job {job.id!r}: job.json has no spec.base_model_id, so the LoRA adapter has no base model")
    model, tok, _ = load_model(resolve_model(base), device="cpu", dtype=dtype, trust_remote_code=trust)
    if (job.model_dir / "tokenizer_config.json").is_file():
        tok = AutoTokenizer.from_pretrained(job.model_dir, trust_remote_code=trust)
    # merged weights run as fast as the base model; the job's adapter files stay untouched
    with quiet_loading():
        model = PeftModel.from_pretrained(model, job.model_dir).merge_and_unload()
    return model.to(device), tok


def load_for_inference(ref, device: str = "auto", jobs_dir: str | os.PathLike | None = None):
    """Load ``(model, tokenizer)`` ready for scoring and generation (eval mode, pad token, left padding).

    ``ref`` is, in this order: a ``(model, tokenizer)`` pair (returned prepared); a job folder (one with
    ``job.json``) or the job file it ran from; an exported archive (``*.tar.gz``, via
    :func:`ftkit.models.exported.load_exported`); a job id in ``jobs_dir`` (default ``runs/`` or
    ``$FTKIT_JOBS_DIR``); or any model reference that
    :func:`ftkit.models.catalog.resolve_model` accepts (catalog name or id, "bundled", a Hugging Face repo id, a
    local model folder). A LoRA job loads its base model (``spec.base_model_id``) and merges the adapter from
    the job's ``model/`` folder into it; a full fine-tuning job loads ``model/`` itself. Weights are fp32 on
    CPU and MPS, bf16 (else fp16) on CUDA.
    """
    if isinstance(ref, tuple) and len(ref) == 2:
        return _prepare(*ref)

    device = pick_device(device)
    text = os.fspath(ref)
    path = Path(text).expanduser()
    if (path / "job.json").is_file():
        return _prepare(*_load_job(Job(path), device))
    if path.is_file() and path.suffix.lower() in JOB_FILE_SUFFIXES:  # the job file a job ran from
        return _prepare(*_load_job(get_job(text, jobs_dir), device))
    if text.endswith((".tar.gz", ".tgz")):
        if not path.is_file():
            raise ModelRefError(f"export archive {path} does not exist")

        model, tok = load_exported(path, device=device, dtype=inference_dtype(device))
        return _prepare(model, tok)
    job_dir = default_jobs_dir(jobs_dir) / text
    if "/" not in text and (job_dir / "job.json").is_file():
        return _prepare(*_load_job(Job(job_dir), device))

    try:
        model, tok, _ = load_model(text, device=device, dtype=inference_dtype(device))
    except UnknownModelError as e:
        raise ModelRefError(
            f"{text!r} is not a job folder, an export archive (.tar.gz), a job id in "
            f"{default_jobs_dir(jobs_dir)}/ "
            f"or a model: {e}"
        ) from None
    return _prepare(model, tok)


def describe_ref(ref) -> str:
    """A short name for a model reference, for tables and reports."""
    if isinstance(ref, tuple):
        return type(ref[0]).__name__
    return os.fspath(ref)


# ------------------------------------------------------------------------------------------- prompt tokens


def aligned_prefix(tokenizer, ids: list[int], text: str) -> int:
    """How many leading tokens of ``ids`` decode to exactly ``text`` (-1 when no token boundary fits)."""
    if not text:
        return 0
    for k in range(1, len(ids) + 1):
        got = tokenizer.decode(ids[:k])
        if got == text:
            return k
        if len(got) > len(text):
            break
    return -1


def encode_for_answer(tokenizer, prompt: str | None, answer: str) -> tuple[list[int], list[int]]:
    """Token ids of one row split where the answer text starts, exactly as training tokenises it.

    Returns ``(context, answer_tokens)``: ``context`` is everything before the answer's first token (the chat
    template up to the generation prompt, plus any template text the assistant turn puts before the answer,
    such as an empty thinking block); ``answer_tokens`` run to the end of the rendered turn.
    """

    head, tail = split_chat_text(tokenizer, prompt, answer)
    head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    tail_ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    at = tail.find(answer) if answer else 0
    k = aligned_prefix(tokenizer, tail_ids, tail[:at]) if at > 0 else 0
    if k < 0:
        raise UsageError(
            f"the chat template puts {tail[:at]!r} before the answer and its tokens run into the answer's "
            "first token, so no single position predicts the answer's first token"
        )
    return head_ids + tail_ids[:k], tail_ids[k:]


def label_token_ids(tokenizer, labels=DECISIONS, probe: str = ANSWER_PROBE) -> dict[str, int]:
    """The first token of each label as training data renders the answer (``probe``, e.g. "yes. <...>").

    Raises ValueError when two labels start with the same token: one next-token distribution could not tell
    them apart.
    """
    firsts = {}
    for label in labels:
        _, ans = encode_for_answer(tokenizer, "?", probe.format(label=label))
        firsts[label] = ans[0]
    by_token: dict[int, list[str]] = {}
    for label, tid in firsts.items():
        by_token.setdefault(tid, []).append(label)
    shared = {t: ls for t, ls in by_token.items() if len(ls) > 1}
    if shared:
        parts = [
            f"{', '.join(map(repr, ls))} all start with token {tokenizer.decode([t])!r} (id {t})"
            for t, ls in shared.items()
        ]
        raise UsageError(
            f"labels {list(labels)} cannot be scored from one next-token distribution: {'; '.join(parts)}. "
            "Use labels whose first tokens differ, or method='generate'"
        )
    return firsts


def contexts(tokenizer, prompts: list[str], probe_label: str = DECISIONS[0]) -> list[list[int]]:
    """The scoring/generation context of every prompt (see :func:`encode_for_answer`)."""
    answer = ANSWER_PROBE.format(label=probe_label)
    return [encode_for_answer(tokenizer, p, answer)[0] for p in prompts]


def length_batches(ids: list[list[int]], batch_size: int):
    """Indexes in batches of similar length (longest first: an out-of-memory error shows up at once)."""
    if batch_size < 1:
        raise UsageError(f"batch_size must be >= 1, got {batch_size}")
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    for s in range(0, len(order), batch_size):
        yield order[s : s + batch_size]


def left_pad(rows: list[list[int]], pad_id: int, device):
    """input_ids, attention_mask and position_ids of left-padded rows (positions count real tokens only)."""
    import torch

    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, width - len(r) :] = torch.tensor(r, dtype=torch.long)
        mask[i, width - len(r) :] = 1
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids.to(device), mask.to(device), pos.to(device)


def model_device(model):
    return next(model.parameters()).device


def next_token_logprobs(
    model,
    tokenizer,
    context_ids: list[list[int]],
    token_ids: list[int],
    batch_size: int = 8,
    progress: bool = False,
) -> list[list[float]]:
    """log P(token | context) for each context and each of ``token_ids``: one batched forward per context."""
    import torch
    from tqdm.auto import tqdm

    out: list[list[float] | None] = [None] * len(context_ids)
    wanted = torch.tensor(token_ids)
    bar = tqdm(total=len(context_ids), desc="scoring", unit="row", disable=not progress)
    with torch.inference_mode():
        for idx in length_batches(context_ids, batch_size):
            ids, mask, pos = left_pad([context_ids[i] for i in idx], tokenizer.pad_token_id, model_device(model))
            logits = model(input_ids=ids, attention_mask=mask, position_ids=pos, logits_to_keep=1).logits[:, -1]
            logp = torch.log_softmax(logits.float(), dim=-1)[:, wanted.to(logits.device)].cpu()
            for row, i in enumerate(idx):
                out[i] = logp[row].tolist()
            bar.update(len(idx))
    bar.close()
    return out  # type: ignore[return-value]


def score_labels(
    model, tokenizer, prompts: list[str], labels=DECISIONS, batch_size: int = 8, progress: bool = False
) -> tuple[list[str], list[list[float]]]:
    """Pick a label per prompt from one forward pass: the argmax of the next-token logits of the labels'
    first tokens at the last prompt position. Returns (predicted labels, per-row log-probs of the labels)."""
    tokens = label_token_ids(tokenizer, labels)
    logps = next_token_logprobs(
        model,
        tokenizer,
        contexts(tokenizer, prompts, labels[0]),
        [tokens[label] for label in labels],
        batch_size,
        progress,
    )
    return argmax_labels(logps, labels), logps


def argmax_labels(logprobs: list[list[float]], labels) -> list[str]:
    """The highest-scoring label of each row (the first one on a tie)."""
    return [labels[max(range(len(labels)), key=lambda j, r=r: r[j])] for r in logprobs]


def eos_ids(model, tokenizer) -> list[int]:
    """The tokens that end an answer: the model's generation config's EOS ids and the tokenizer's."""
    eos = getattr(model.generation_config, "eos_token_id", None)
    eos = set(eos if isinstance(eos, list) else [eos]) | {tokenizer.eos_token_id}
    return sorted(e for e in eos if isinstance(e, int))


def generate_texts(
    model,
    tokenizer,
    prompts: list[str],
    max_new_tokens: int = 64,
    batch_size: int = 8,
    progress: bool = False,
) -> list[str]:
    """Greedy continuations after the chat template's generation prompt, special tokens removed."""
    import torch
    from tqdm.auto import tqdm
    from transformers import GenerationConfig

    if max_new_tokens < 1:
        raise UsageError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    ctx = contexts(tokenizer, prompts)
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens,
        do_sample=False,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=eos_ids(model, tokenizer),
    )
    out: list[str] = [""] * len(prompts)
    bar = tqdm(total=len(prompts), desc="generating", unit="row", disable=not progress)
    with torch.inference_mode():
        for idx in length_batches(ctx, batch_size):
            ids, mask, _ = left_pad([ctx[i] for i in idx], tokenizer.pad_token_id, model_device(model))
            gen = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)
            for row, i in enumerate(idx):
                out[i] = tokenizer.decode(gen[row, ids.shape[1] :], skip_special_tokens=True).strip()
            bar.update(len(idx))
    bar.close()
    return out


def parse_decision(text: str, labels=DECISIONS, marker: str | None = "Answer:") -> str | None:
    """The first label word in a generated answer (case-insensitive, whole words), or None. An answer that reasons
    first ("... no significant ...\nAnswer: yes") is read after its last ``marker``."""
    if marker and marker in text:
        text = text.rsplit(marker, 1)[1]
    if tuple(labels) == DECISIONS:
        m = _DECISION_WORD.search(text)
    else:
        m = re.search(r"\b(" + "|".join(map(re.escape, labels)) + r")\b", text, re.IGNORECASE)
    if not m:
        return None
    found = m.group(1).lower()
    return next(label for label in labels if label.lower() == found)
