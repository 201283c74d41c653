"""Checking a written GGUF file before it is handed over: loaded back with transformers (``gguf_file=``), it must
answer like the merged model it was written from.

Checked on probe prompts: the tokenizer splits text into the same ids, keeps BOS/EOS/pad and the chat template
(rendered conversations are identical), next-token logits agree within a tolerance for f16/bf16, and for q8_0
(whose rounding moves logits more) the greedy answer's first token (a classifier's decision) is the same on every
probe. How many whole greedy answers (12 tokens) agree is recorded for every type: q8_0 can part ways after a few
tokens at a near tie.
"""

from __future__ import annotations

from pathlib import Path

from ftkit.export.errors import ExportError
from ftkit.export.merge import PROBE_PROMPT, compare_logits, probe_logits
from ftkit.models.loading import quiet_loading

# the largest logit difference allowed, times the reference's largest logit; q8_0 is judged by greedy answers
GGUF_RTOL = {"f16": 5e-3, "bf16": 2e-2, "q8_0": None}
PROBES = (
    PROBE_PROMPT,
    "List the numbers 1 to 12, then add 17 and 25.",
    "Name three symptoms of dehydration, briefly.",
)
GREEDY_TOKENS = 12
# text that exercises the tokenizer: digits, accents, a symbol, a special token in the middle, newlines
TOKENIZER_PROBE = "Count 1 2 3, 12345 and résumé ☃ <|im_end|> done\n\n  indented\tTab"
_CONVERSATION = [
    {"role": "system", "content": "You answer briefly."},
    {"role": "user", "content": "Is 4 even?"},
    {"role": "assistant", "content": "yes"},
    {"role": "user", "content": "Is 7 even?"},
]


def _greedy(model, tokenizer, prompt: str) -> list[int]:
    import torch

    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
    )
    ids = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=GREEDY_TOKENS, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return out[0, ids["input_ids"].shape[1] :].tolist()


def _tokenizer_problems(reference, loaded) -> list[str]:
    problems = []
    for what in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(reference, what) != getattr(loaded, what):
            problems.append(f"{what} {getattr(loaded, what)} (the model's is {getattr(reference, what)})")
    if reference.chat_template != loaded.chat_template:
        problems.append("the chat template differs")
    else:
        rendered = [
            t.apply_chat_template(_CONVERSATION, tokenize=False, add_generation_prompt=True)
            for t in (reference, loaded)
        ]
        if rendered[0] != rendered[1]:
            problems.append("the chat template renders a conversation differently")
    for text in (TOKENIZER_PROBE, *PROBES):
        if reference(text)["input_ids"] != loaded(text)["input_ids"]:
            problems.append(f"the tokenizer splits {text[:30]!r}... differently")
            break
    return problems


def verify_gguf(reference_dir: str | Path, gguf_file: str | Path, quant: str, reference_model=None) -> dict:
    """Load ``gguf_file`` back with transformers and compare it with the model folder ``reference_dir``;
    returns the figures, or raises :class:`ExportError` saying what differs."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf_file = Path(gguf_file)
    with quiet_loading():
        ref_tok = AutoTokenizer.from_pretrained(reference_dir)
        ref = reference_model or AutoModelForCausalLM.from_pretrained(reference_dir, dtype=torch.float32).eval()
        tok = AutoTokenizer.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        model = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name, dtype=torch.float32)
    model.eval()
    problems = _tokenizer_problems(ref_tok, tok)
    diffs = [compare_logits(probe_logits(ref, ref_tok, p), probe_logits(model, tok, p), 1.0) for p in PROBES]
    max_diff = max(d["max_abs_diff"] for d in diffs)
    scale = max(d["tolerance"] for d in diffs)  # rtol 1.0: the reference's largest logit (at least 1)
    answers = [(_greedy(ref, ref_tok, p), _greedy(model, tok, p)) for p in PROBES]
    agree = sum(a == b for a, b in answers)
    first = sum(a[:1] == b[:1] for a, b in answers)
    rtol = GGUF_RTOL[quant]
    tolerance = None if rtol is None else rtol * scale
    if tolerance is not None and max_diff > tolerance:
        problems.append(f"next-token logits differ by up to {max_diff:.3g} (allowed {tolerance:.3g} for {quant})")
    if rtol is None and first < len(PROBES):
        problems.append(f"greedy answers start differently on {len(PROBES) - first} of {len(PROBES)} probe prompts")
    if problems:
        raise ExportError(
            f"the GGUF file {gguf_file.name} does not reload as the model it was written from: "
            + "; ".join(problems)
            + "; nothing was exported"
        )
    return {
        "quant": quant,
        "max_abs_diff": max_diff,
        "tolerance": tolerance,
        "greedy_tokens": GREEDY_TOKENS,
        "greedy_agree": f"{agree}/{len(PROBES)}",
        "first_token_agree": f"{first}/{len(PROBES)}",
        "chat_template_round_trip": True,
        "tokenizer_round_trip": True,
        "probe_prompts": list(PROBES),
    }
