"""Shared fixtures: the real PubMedQA copy in ../shared, the bundled SmolLM2, and a tiny random Llama."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("FTKIT_SHARED", ROOT.parent / "shared"))
PUBMEDQA = SHARED / "pubmedqa"


@pytest.fixture(scope="session")
def pqal_path() -> Path:
    p = PUBMEDQA / "ori_pqal.json"
    if not p.is_file():
        pytest.fail(f"PubMedQA PQA-L is expected at {p} (CI lays ../shared beside the clone)")
    return p


@pytest.fixture(scope="session")
def test_truth_path() -> Path:
    return PUBMEDQA / "test_ground_truth.json"


@pytest.fixture(scope="session")
def bundled_model_dir() -> Path:
    """The bundled SmolLM2-135M-Instruct as a safetensors folder (converted once into the ftkit cache)."""
    from ftkit.models import bundled

    return bundled.ensure(quiet=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, bundled_model_dir) -> Path:
    """A randomly initialised 2-layer Llama with SmolLM2's tokenizer and chat template: seconds per test."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(cfg).save_pretrained(out)
    tok.save_pretrained(out)
    return out


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item, so fixtures can tell a failed test (browser screenshots)."""
    rep = yield
    setattr(item, f"rep_{rep.when}", rep)
    return rep
