"""The lean LoRA forward (ftkit.models.lora_forward): peft's outputs and gradients with fewer passes, given to every
plain LoRA layer a training job builds, and peft's own forward wherever the lean one would not compute the same."""

from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model
from peft.tuners.lora.layer import Linear as LoraLinear

from ftkit.models.lora_forward import lean_forward, use_lean_lora_forward


def lora_model(tiny_model_dir, **config):
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    # random B (peft starts it at zero): the adapters change the output and both A and B get gradients
    cfg = {"r": 4, "lora_alpha": 12, "target_modules": "all-linear", "init_lora_weights": False, **config}
    return get_peft_model(base, LoraConfig(**cfg))


def batch(n_rows=2, length=24):
    g = torch.Generator().manual_seed(1)
    ids = torch.randint(5, 100, (n_rows, length), generator=g)
    return {"input_ids": ids, "labels": ids.clone()}


def loss_and_grads(model, inputs):
    model.zero_grad()
    out = model(**inputs)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return out.logits.detach(), out.loss.item(), grads


def lean_layers(model) -> int:
    return sum(getattr(m.__dict__.get("forward"), "__func__", None) is lean_forward for m in model.modules())


@pytest.mark.parametrize("alpha", [8, 12])  # scaling 2 (the usual alpha / r) and 3
def test_the_lean_forward_gives_peft_s_logits_loss_and_lora_gradients(tiny_model_dir, alpha):
    peft_model = lora_model(tiny_model_dir, lora_alpha=alpha)
    lean = copy.deepcopy(peft_model)
    n_lora = sum(type(m) is LoraLinear for m in lean.modules())
    assert use_lean_lora_forward(lean) == n_lora > 0
    inputs = batch()
    logits, loss, grads = loss_and_grads(peft_model, inputs)
    logits2, loss2, grads2 = loss_and_grads(lean, inputs)
    assert loss2 == pytest.approx(loss, rel=1e-6)
    torch.testing.assert_close(logits2, logits, rtol=1e-5, atol=1e-5)
    assert grads2.keys() == grads.keys() and len(grads) == 2 * n_lora
    for name, g in grads.items():
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(grads2[name], g, rtol=1e-4, atol=1e-6, msg=name)


def backward_nodes(loss) -> set[str]:
    seen, todo, names = set(), [loss.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        names.add(type(node).__name__)
        todo.extend(next_fn for next_fn, _ in node.next_functions)
    return names


def test_the_lean_forward_s_backward_copies_no_layer_output(tiny_model_dir):
    # an in-place add on a view of a layer's output makes autograd zero-fill and copy the whole output in backward
    # (CopySlices); on a CPU that cost more than the lean forward saves
    model = lora_model(tiny_model_dir)
    use_lean_lora_forward(model)
    names = backward_nodes(model(**batch()).loss)
    assert "AddmmBackward0" in names
    assert "CopySlices" not in names


def test_under_bf16_autocast_the_lean_forward_matches_peft_s(tiny_model_dir):
    peft_model = lora_model(tiny_model_dir)
    lean = copy.deepcopy(peft_model)
    use_lean_lora_forward(lean)
    inputs = batch()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ref, out = peft_model(**inputs), lean(**inputs)
    assert out.logits.dtype == ref.logits.dtype
    assert out.loss.item() == pytest.approx(ref.loss.item(), rel=2e-2)


def test_ftkit_kernels_off_leaves_every_layer_on_peft_s_forward(tiny_model_dir, monkeypatch):
    monkeypatch.setenv("FTKIT_KERNELS", "off")
    model = lora_model(tiny_model_dir)
    assert use_lean_lora_forward(model) == 0
    assert lean_layers(model) == 0


@pytest.fixture
def peft_calls(monkeypatch):
    """Counts the calls that reach peft's own forward."""
    calls = []
    real = LoraLinear.forward

    def forward(self, *a, **kw):
        calls.append(self)
        return real(self, *a, **kw)

    monkeypatch.setattr(LoraLinear, "forward", forward)
    return calls


@pytest.mark.parametrize("case", ["dropout", "dora", "merged", "adapters disabled", "input in another dtype"], ids=str)
def test_peft_s_own_forward_runs_where_the_lean_one_would_compute_something_else(tiny_model_dir, peft_calls, case):
    from transformers import AutoModelForCausalLM

    model = lora_model(tiny_model_dir, lora_dropout=0.1 if case == "dropout" else 0.0, use_dora=case == "dora")
    n = use_lean_lora_forward(model)
    inputs = batch()
    if case == "merged":
        model.merge_adapter()
    if case == "input in another dtype":
        for m in model.modules():
            if type(m) is LoraLinear:
                m.lora_A.to(torch.float64)
                m.lora_B.to(torch.float64)
    model.eval()  # dropout off, so the outputs compare
    with torch.no_grad():
        if case == "adapters disabled":
            with model.disable_adapter():
                out = model(**inputs).logits
            ref = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)(**inputs).logits
        else:
            out = model(**inputs).logits
            ref = None
    assert len(peft_calls) >= n > 0  # every layer, on every call
    if ref is not None:
        torch.testing.assert_close(out, ref)


def test_a_training_job_s_model_has_the_lean_forward_on_every_lora_layer(tiny_model_dir, tmp_path):
    from ftkit.job.spec import load_job
    from ftkit.models.device import Precision
    from ftkit.train.trainer import build_model

    spec = load_job(
        {
            "name": "lean",
            "base_model_id": str(tiny_model_dir),
            "dataset": {"id": str(tmp_path), "prompt_column": "prompt", "answer_column": "answer"},
            "hyperparameters": {"lora": {"r": 4, "alpha": 8}},
        }
    )
    model, *_ = build_model(spec, Precision("fp32", "test"))
    assert lean_layers(model) == sum(type(m) is LoraLinear for m in model.modules()) > 0
