"""Greedy decoding in slots with rows coming and going (ftkit.results.decoding), on the bundled SmolLM2."""

from __future__ import annotations

import pytest

PROMPTS = [
    "Is the sky blue? Explain briefly, then answer yes or no after 'Answer:'.",
    "Does aspirin prevent heart attacks in every adult? Explain in one sentence, then write 'Answer:' and yes, "
    "no or maybe.",
    "Is water wet?",
    "Four, the last one?",
    "Name three colours of the rainbow, then say whether the rainbow has a fourth.",
]


@pytest.fixture(scope="module")
def bundled(bundled_model_dir):
    from ftkit.results.inference import load_for_inference

    return load_for_inference(str(bundled_model_dir), device="cpu")


@pytest.fixture(autouse=True)
def slots_as_asked(monkeypatch):
    """batch_size slots exactly (else as many rows as fit the cache budget share a batch: all of these)."""
    monkeypatch.setattr("ftkit.results.decoding.CACHE_BYTES", 0)


def _decode(model, tok, readout, batch_size, max_new_tokens=12, stop=lambda g: False):
    from ftkit.results.decoding import decode_rows
    from ftkit.results.inference import contexts

    return decode_rows(
        model,
        contexts(tok, PROMPTS),
        max_new_tokens=max_new_tokens,
        eos_ids={tok.eos_token_id},
        pad_id=tok.pad_token_id,
        stop=stop,
        readout=readout,
        wanted=list(range(len(tok))),
        batch_size=batch_size,
    )


def test_decoded_rows_match_model_generate_and_a_fresh_pass_over_a_readout_context_that_differs_midway(bundled):
    import torch
    from transformers import GenerationConfig

    from ftkit.results.inference import contexts, left_pad, next_token_logprobs

    model, tok = bundled
    ctx = contexts(tok, PROMPTS)
    # read each row out after a context that keeps only the first 3 generated tokens and then says something else:
    # the cached tokens after those 3 must be masked out and the new ones fed at the right positions; it is longer
    # than the slots were planned for (context + max_new_tokens + 8), so the cache grows on the way
    other = tok(
        " In short, having weighed all that was said above, I would say that the answer is", add_special_tokens=False
    )["input_ids"]
    assert len(other) > 8 + 3
    targets = {}

    def readout(i, generated):
        targets[i] = ctx[i] + generated[:3] + other
        return targets[i]

    found = _decode(model, tok, readout, batch_size=3)  # 5 rows in 3 slots: two rows wait for a free slot
    ids, mask, _ = left_pad(ctx[:1], tok.pad_token_id, "cpu")
    cfg = GenerationConfig(max_new_tokens=12, do_sample=False, pad_token_id=tok.pad_token_id, eos_token_id=[2])
    with torch.inference_mode():
        reference = model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)[0, ids.shape[1] :]
    assert found[0][0] == reference.tolist()  # greedy tokens as model.generate writes them
    fresh = next_token_logprobs(model, tok, [targets[i] for i in range(len(PROMPTS))], list(range(len(tok))), 1)
    for (_, logps), want in zip(found, fresh, strict=True):
        assert max(abs(a - b) for a, b in zip(logps, want, strict=True)) < 2e-3


def test_rows_that_end_early_leave_the_batch_without_changing_what_the_others_generate(bundled):
    from ftkit.results.inference import contexts

    model, tok = bundled
    ctx = contexts(tok, PROMPTS)

    def stop(generated):  # ends rows after different numbers of tokens, so they leave a shared batch one by one
        return len(generated) >= 2 + (generated[0] % 7)

    alone = _decode(model, tok, lambda i, g: ctx[i] + g, batch_size=1, stop=stop)
    together = _decode(model, tok, lambda i, g: ctx[i] + g, batch_size=len(PROMPTS), stop=stop)
    assert [g for g, _ in together] == [g for g, _ in alone]
    for (_, a), (_, b) in zip(together, alone, strict=True):
        assert max(abs(x - y) for x, y in zip(a, b, strict=True)) < 2e-3
    lengths = {len(g) for g, _ in together}
    assert len(lengths) > 1 and max(lengths) < 12  # rows really ended at different steps, before the budget


def test_decoding_refuses_a_budget_below_one_token(bundled):
    from ftkit.errors import UsageError

    model, tok = bundled
    with pytest.raises(UsageError, match="max_new_tokens must be >= 1, got 0"):
        _decode(model, tok, lambda i, g: g, batch_size=2, max_new_tokens=0)


def test_contexts_sharing_no_prefix_and_one_token_contexts_decode_as_each_does_alone(bundled):
    # the shared-prefix prefill must step aside: nothing shared here, and a context of one token keeps it for itself
    from ftkit.results.decoding import decode_rows

    model, tok = bundled
    ctx = [
        tok("Hello", add_special_tokens=False)["input_ids"],
        tok("The weather today", add_special_tokens=False)["input_ids"],
        tok("Hello there", add_special_tokens=False)["input_ids"],
    ]
    assert len(ctx[0]) == 1

    def run(rows, batch_size):
        return decode_rows(
            model,
            rows,
            max_new_tokens=6,
            eos_ids={tok.eos_token_id},
            pad_id=tok.pad_token_id,
            stop=lambda g: False,
            readout=lambda i, g: rows[i] + g,
            wanted=[0, 1, 2],
            batch_size=batch_size,
        )

    together = run(ctx, 2)
    for i, row in enumerate(ctx):
        (alone,) = run([row], 1)
        assert together[i][0] == alone[0]
        assert max(abs(a - b) for a, b in zip(together[i][1], alone[1], strict=True)) < 2e-3


@pytest.mark.parametrize("family", ["qwen2", "mistral", "mistral_sliding"])
def test_the_catalogs_other_families_decode_in_slots_as_model_generate_or_are_left_to_the_two_pass_reference(family):
    # Qwen2 (q/k/v biases) and Mistral v0.2 decode in slots; Mistral v0.1's 4096-token sliding window does not
    import torch
    from transformers import AutoModelForCausalLM, GenerationConfig, MistralConfig, Qwen2Config

    from ftkit.results.decoding import decode_rows, slots_supported
    from ftkit.results.inference import left_pad

    shape = dict(
        vocab_size=1000,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        pad_token_id=0,
        eos_token_id=1,
    )
    config = (
        Qwen2Config(**shape)
        if family == "qwen2"
        else MistralConfig(**shape, sliding_window=4096 if family == "mistral_sliding" else None)
    )
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config, attn_implementation="sdpa").eval()
    if family == "mistral_sliding":
        assert not slots_supported(model)
        return
    assert slots_supported(model)
    ctx = [[5, 6, 7, 8, 9, 10, 11], [5, 6, 7, 300, 301], [5, 6, 7, 8, 400, 401, 402, 403, 404]]
    found = decode_rows(
        model,
        ctx,
        max_new_tokens=6,
        eos_ids={1},
        pad_id=0,
        stop=lambda g: False,
        readout=lambda i, g: ctx[i] + g,
        wanted=list(range(1000)),
        batch_size=2,
    )
    cfg = GenerationConfig(max_new_tokens=6, do_sample=False, pad_token_id=0, eos_token_id=[1])
    for row, (generated, logps) in zip(ctx, found, strict=True):
        ids, mask, _ = left_pad([row], 0, "cpu")
        with torch.inference_mode():
            assert (
                model.generate(input_ids=ids, attention_mask=mask, generation_config=cfg)[0, len(row) :].tolist()
                == generated
            )
            fresh = torch.log_softmax(model(input_ids=torch.tensor([row + generated])).logits[0, -1].float(), -1)
        assert (fresh - torch.tensor(logps)).abs().max() < 1e-4
