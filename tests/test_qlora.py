"""QLoRA (local.quantization 4bit/8bit through bitsandbytes, which runs on this CPU): real training on the tiny
Llama, the merged export into the unquantised base, the spec checks and the quantised memory figure.

bitsandbytes is not in the test venv itself: peft imports it eagerly, which costs every process that imports peft
about 4 s, so ``make setup`` installs it into ``.venv/qlora`` and the QLoRA runs here are ``ftkit train`` processes
with that folder on their PYTHONPATH (as a user with the qlora extra runs them); everything else, the merged export
included, runs without bitsandbytes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftkit.job.problems import JobSpecError
from ftkit.job.spec import load_job
from ftkit.job.store import Job

QLORA_SITE = Path(__file__).resolve().parent.parent / ".venv" / "qlora"


def train_with_bitsandbytes(spec: dict, folder: Path):
    """``ftkit train`` on the job in a process that has bitsandbytes; returns the finished Job."""
    if not (QLORA_SITE / "bitsandbytes").is_dir() and importlib.util.find_spec("bitsandbytes") is None:
        pytest.fail(f"bitsandbytes is in neither {QLORA_SITE} nor this venv: run make setup")
    job_file = folder / f"{spec['name']}.json"
    job_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(QLORA_SITE), os.environ.get("PYTHONPATH")]))}
    cmd = [sys.executable, "-m", "ftkit", "train", str(job_file), "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert out.returncode == 0, out.stdout + out.stderr
    (folder,) = [p for p in Path(spec["local"]["output_dir"]).iterdir() if (p / "job.json").is_file()]
    return Job(folder)  # read as it stands: this process cannot load a quantised job spec


def qlora_spec(tmp_path: Path, model: Path, quantization: str, **local) -> dict:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for split, numbers in (("train", range(16)), ("validation", range(100, 102))):
        rows = "".join(f'"Is {i} even?",{"yes" if i % 2 == 0 else "no"}\n' for i in numbers)
        (data / f"{split}.csv").write_text("prompt,answer\n" + rows)
    return {
        "name": f"q{quantization}",
        "base_model_id": str(model),
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {"batch_size": 4, "learning_rate": 1e-2, "n_epochs": 3, "lora": {"r": 4, "alpha": 8}},
        "local": {
            "output_dir": str(tmp_path / "runs"),
            "seed": 1,
            "precision": "fp32",
            "labels": [],
            "quantization": quantization,
            **local,
        },
    }


def _train_losses(job) -> list[float]:
    return [r["train_loss"] for r in job.metrics() if r["train_loss"] is not None]


@pytest.fixture(scope="module")
def qlora_job(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("qlora")
    return train_with_bitsandbytes(qlora_spec(tmp, tiny_model_dir, "4bit"), tmp)


def test_4bit_qlora_trains_on_a_quantised_base_and_saves_the_adapter(qlora_job):
    job = qlora_job
    assert job.status == "completed"
    assert "LoRA on a 4bit base (bitsandbytes)" in (job.path / "job.log").read_text()
    losses = _train_losses(job)
    assert len(losses) == 12 and losses[-1] < losses[0] - 0.5, losses
    cfg = json.loads((job.model_dir / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and (job.model_dir / "adapter_model.safetensors").is_file()


def test_8bit_base_trains_too(tmp_path, tiny_model_dir):
    spec = qlora_spec(tmp_path, tiny_model_dir, "8bit")
    spec["hyperparameters"]["n_epochs"] = 1
    job = train_with_bitsandbytes(spec, tmp_path)
    assert job.status == "completed" and len(_train_losses(job)) == 4
    assert "LoRA on a 8bit base (bitsandbytes)" in (job.path / "job.log").read_text()


def test_merged_export_of_a_qlora_job_merges_into_the_unquantised_base(qlora_job, tiny_model_dir, tmp_path):
    import tarfile

    import torch
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ftkit.export.merge import probe_logits
    from ftkit.export.stage import export_job

    out = export_job(qlora_job, out=tmp_path / "merged.tar.gz", merged=True, quiet=True, dtype="fp32")
    with tarfile.open(out) as tar:
        tar.extractall(tmp_path / "x", filter="data")
    (folder,) = [p.parent for p in (tmp_path / "x").rglob("model.safetensors")]
    manifest = json.loads((folder / "ftkit_export.json").read_text())
    assert manifest["merge_check"]["trained_on_quantization"] == "4bit" and manifest["merge_check"]["ok"]
    assert "trained on a 4bit quantised copy of the base" in (folder / "README.md").read_text()
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    # merged = the original (never quantised) weights + the adapter's update, exactly: a merge into 4-bit weights
    # would be off by their rounding (~1e-2 on this model)
    base = load_file(Path(tiny_model_dir) / "model.safetensors")
    merged = load_file(folder / "model.safetensors")
    adapter = load_file(qlora_job.model_dir / "adapter_model.safetensors")
    name = "model.layers.0.self_attn.q_proj.weight"
    a, b = (adapter[f"base_model.model.{name[:-7]}.lora_{x}.weight"] for x in "AB")
    assert merged[name].dtype == torch.float32
    assert torch.allclose(merged[name], base[name] + (8 / 4) * b @ a, atol=1e-6)
    assert float((b @ a).abs().max()) > 1e-3  # the update is not nothing

    tok = AutoTokenizer.from_pretrained(folder)
    reference = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir), qlora_job.model_dir)
    got = probe_logits(AutoModelForCausalLM.from_pretrained(folder).eval(), tok)
    assert torch.allclose(got, probe_logits(reference.eval(), tok), atol=1e-4)


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        ({"lora": False}, "only LoRA adapters train on them; lora.enabled is false"),
        ({"device": "mps"}, "not Apple MPS"),
    ],
)
def test_quantization_it_cannot_run_is_a_spec_error(tmp_path, tiny_model_dir, change, fragment):
    spec = qlora_spec(tmp_path, tiny_model_dir, "4bit")
    if change.pop("lora", True) is False:
        spec["hyperparameters"]["lora"] = {"enabled": False}
    spec["local"].update(change)
    with pytest.raises(JobSpecError) as e:
        load_job(spec)
    assert "local.quantization:" in str(e.value) and fragment in str(e.value) and 'got "4bit"' in str(e.value)


def test_without_bitsandbytes_the_job_is_refused_naming_the_extra(tmp_path, tiny_model_dir):
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(qlora_spec(tmp_path, tiny_model_dir, "8bit")))
    code = (
        "import sys; sys.modules['bitsandbytes'] = None  # as if the qlora extra were not installed\n"
        "from ftkit.cli import main\n"
        f"sys.exit(main(['train', {str(job_file)!r}]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "local.quantization: quantisation needs the bitsandbytes package" in out.stderr
    assert "pip install 'ftkit[qlora]'" in out.stderr and "Traceback" not in out.stderr
    assert not (tmp_path / "runs").exists()  # refused before any job folder


def test_memory_formula_counts_quantised_linear_weights_at_their_bits(tiny_model_dir):
    from ftkit.job.spec import LoraSpec
    from ftkit.models.catalog import resolve_model
    from ftkit.train.memory import memory_formula, model_shape

    shape = model_shape(resolve_model(str(tiny_model_dir)), LoraSpec(r=4, alpha=8))
    # 2 layers x (q 64x64 + k, v 64x32 + o 64x64 + gate, up, down 64x128): the decoder's linear weights
    assert shape["quantizable"] == 2 * (4096 + 2 * 2048 + 4096 + 3 * 8192)
    full = memory_formula(shape, "bf16", "bf16", 2, 64, "cpu")
    frozen = shape["parameters"] - shape["trainable"]
    for quant, bits in (("4bit", 4), ("8bit", 8)):
        m = memory_formula(shape, "bf16", "bf16", 2, 64, "cpu", quantization=quant)
        rest = frozen - shape["quantizable"]  # embeddings and norms, kept in fp32
        assert m.weights == shape["quantizable"] * bits // 8 + rest * 4 + shape["trainable"] * 4
        assert (m.gradients, m.optimizer, m.activations) == (full.gradients, full.optimizer, full.activations)
