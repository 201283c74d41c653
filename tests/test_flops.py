"""ftkit.train.flops: the model-FLOP count every FLOP/s figure uses, checked against torch's own flop counter on a
real forward + backward of a small Llama (LoRA, LoRA on the top layers, full fine-tuning of the top layer)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

from ftkit.models.loading import apply_lora, freeze_all_but_last_layers
from ftkit.train import flops
from ftkit.train.flops import Shape, scoring_flops, training_flops

CFG = dict(
    vocab_size=1000,
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    tie_word_embeddings=True,
    attn_implementation="eager",  # attention as two batched matmuls the counter sees (sdpa's CPU kernel it may not)
)


def _counted(model, lengths: list[int], prompt: int) -> int:
    """FLOPs torch counts for forward + backward over one row per length, loss on the tokens after ``prompt``,
    logits only where there is a target (as ftkit's Trainer computes them)."""
    torch.manual_seed(0)
    with FlopCounterMode(display=False) as counter:
        for n in lengths:
            ids = torch.randint(0, CFG["vocab_size"], (1, n))
            labels = ids.clone()
            labels[:, :prompt] = -100
            keep = torch.zeros_like(labels, dtype=torch.bool)
            keep[..., :-1] = labels[..., 1:] != -100
            logits = model(input_ids=ids, logits_to_keep=keep).logits
            F.cross_entropy(logits.float(), labels[..., 1:][keep[..., :-1]]).backward()
    return counter.get_total_flops()


@pytest.mark.parametrize(
    "case",
    ["lora on every layer", "lora on the top two layers", "full fine-tuning of the top layer"],
)
def test_the_flop_count_equals_what_torch_counts_on_a_real_training_step(case, monkeypatch):
    # eager attention multiplies the full square of each row and masks it; the count's causal pairs become squares
    monkeypatch.setattr(flops, "attended_pairs", lambda lengths: sum(n * n for n in lengths))
    cfg = LlamaConfig(**CFG)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    shape, lengths, prompt = Shape.from_config(cfg), [20, 33], 12
    targets = sum(n - prompt for n in lengths)  # labels after the prompt, each predicted from the position before
    if case == "lora on every layer":
        model, expected = apply_lora(model, 4, 8, 0.0, None), training_flops(shape, lengths, targets, 4)
    elif case == "lora on the top two layers":
        model = apply_lora(model, 4, 8, 0.0, ["q_proj", "v_proj", "down_proj"], last_layers=2)
        expected = training_flops(shape, lengths, targets, 4, ["q_proj", "v_proj", "down_proj"], trainable_layers=2)
    else:
        freeze_all_but_last_layers(model, 1)
        expected = training_flops(shape, lengths, targets, lora_r=None, trainable_layers=1)
    assert _counted(model, lengths, prompt) == expected.total


def test_the_shape_of_the_bundled_model_counts_exactly_its_decoder_matmul_weights(bundled_model_dir):
    config = AutoConfig.from_pretrained(bundled_model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    linear = sum(
        m.weight.numel() for name, m in model.named_modules() if isinstance(m, torch.nn.Linear) and ".layers." in name
    )
    shape = Shape.from_config(config)
    assert shape.matmul_parameters() == linear == 106_168_320
    # the rule of thumb the benchmarks used (4 x all 134.5M parameters a token) overstates a LoRA step on a PubMedQA
    # row (~385 tokens, ~12 targets) by about a tenth even with attention counted: the tied embedding / LM head
    # works on the targets only
    honest = training_flops(shape, [385], 12).total / 385
    assert 4 * 106e6 < honest < 0.92 * 4 * 134_515_008


def test_scoring_counts_the_lm_head_only_where_logits_are_read():
    shape = Shape.from_config(LlamaConfig(**CFG))
    one = scoring_flops(shape, [50, 60], head_positions=2)
    every = scoring_flops(shape, [50, 60], head_positions=110)
    assert every.total - one.total == 2 * 64 * 1000 * 108
    assert one.backward == 0
