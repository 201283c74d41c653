"""The optional GPU kernels (ftkit.models.kernels): FlashAttention-2 and Liger only on CUDA, in 16-bit, when
installed; a CPU run is untouched even where both packages are installed."""

from __future__ import annotations

import importlib.util

import pytest

from ftkit.models import kernels


@pytest.fixture
def installed(monkeypatch):
    """Pretend flash_attn and liger_kernel are installed (neither can be on a CPU-only machine)."""
    real = importlib.util.find_spec

    def find_spec(name, *a, **kw):
        return object() if name in ("flash_attn", "liger_kernel") else real(name, *a, **kw)

    monkeypatch.setattr(kernels.importlib.util, "find_spec", find_spec)


def test_flash_attention_is_picked_on_cuda_in_16_bit_only(installed, monkeypatch):
    assert kernels.attention_implementation("cuda", "bf16") == "flash_attention_2"
    assert kernels.attention_implementation("cuda:1", "fp16") == "flash_attention_2"
    assert kernels.attention_implementation("cuda", "fp32") is None  # FlashAttention has no fp32 kernels
    monkeypatch.setenv("FTKIT_KERNELS", "off")
    assert kernels.attention_implementation("cuda", "bf16") is None


def test_without_flash_attn_installed_cuda_keeps_the_default_attention():
    assert importlib.util.find_spec("flash_attn") is None  # this suite runs without it
    assert kernels.attention_implementation("cuda", "bf16") is None


@pytest.mark.parametrize("device", ["cpu", "mps"])
def test_a_cpu_run_is_untouched_even_with_both_packages_installed(installed, tiny_model_dir, device):
    from transformers import AutoModelForCausalLM

    assert kernels.attention_implementation(device, "bf16") is None
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    before = [type(m).__name__ for m in model.modules()]
    assert kernels.apply_liger(model, device) == []  # would raise ImportError had it tried to import liger_kernel
    assert [type(m).__name__ for m in model.modules()] == before
    assert kernels.kernels_note(model) is None
    model.config._attn_implementation = "flash_attention_2"  # what a CUDA load with flash_attn sets
    assert kernels.kernels_note(model) == "kernels: FlashAttention-2 attention"

    class LigerRMSNorm:  # Liger patches an instance by binding its kernel's forward onto the model's own modules
        def forward(self, x):
            return x

    LigerRMSNorm.forward.__module__ = "liger_kernel.transformers.rms_norm"  # where Liger's own forward lives
    norm = model.model.norm
    norm.__dict__["forward"] = LigerRMSNorm.forward.__get__(norm, type(norm))
    assert kernels.kernels_note(model) == "kernels: FlashAttention-2 attention; Liger RMSNorm, RoPE and SwiGLU"


def test_a_cpu_job_log_says_nothing_of_gpu_kernels(tmp_path, tiny_model_dir):
    from ftkit.train.engine import train

    data = tmp_path / "data"
    data.mkdir()
    (data / "train.csv").write_text("prompt,answer\n" + "".join(f"q{i},a{i}\n" for i in range(8)))
    job = train(
        {
            "name": "k",
            "base_model_id": str(tiny_model_dir),
            "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
            "hyperparameters": {"batch_size": 4, "n_evals": 0},
            "local": {"output_dir": str(tmp_path / "runs"), "max_steps": 1},
        },
        quiet=True,
    )
    log = (job.path / "job.log").read_text()
    assert "completed" in log and "kernels:" not in log


def test_gpu_benchmark_compare_runs_each_configuration_and_names_what_is_missing(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_throughput.py"
    tiny = "--hidden 64 --layers 2 --heads 4 --kv-heads 2 --intermediate 128 --vocab 512 --steps 2 --warmup 1"
    cmd = [sys.executable, str(script), "--device", "cpu", "--compare", *tiny.split(), "--out", str(tmp_path)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    table = next(tmp_path.glob("gpu_throughput-compare-*.md")).read_text()
    assert "| SDPA, padded | " in table and "| 1.00x |" in table  # measured, the reference of the others
    assert "| FlashAttention-2, padding-free, Liger | skipped: flash_attn, liger_kernel not installed |" in table
