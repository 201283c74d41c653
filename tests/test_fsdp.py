"""FSDP (local.distributed fsdp): two CPU processes on gloo through torchrun on the tiny Llama, against one process;
its spec checks; the sharded memory figure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ftkit.job import store as jobstore
from ftkit.job.problems import JobSpecError
from ftkit.job.spec import load_job
from ftkit.train.engine import train


def fsdp_spec(tmp_path: Path, model: Path, runs: str, **local) -> dict:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    for split, start, n in (("train", 0, 32), ("validation", 1000, 8)):
        rows = "".join(
            f'"Question number {i}: is {i} even?",{"yes" if i % 2 == 0 else "no"}\n' for i in range(start, start + n)
        )
        (data / f"{split}.csv").write_text("prompt,answer\n" + rows)
    return {
        "name": "tiny",
        "base_model_id": str(model),
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "batch_size": 8,
            "learning_rate": 1e-2,
            "n_evals": 2,
            "best_checkpoints": True,
            "lora": {"r": 4, "alpha": 8},
        },
        "local": {
            "output_dir": str(tmp_path / runs),
            "seed": 1,
            "micro_batch_size": 2,
            "precision": "fp32",  # the comparison with one process is to fp32 rounding
            "save_steps": 2,
            "distributed": "fsdp",
            **local,
        },
    }


def _adapter(job):
    from safetensors.torch import load_file

    return load_file(job.model_dir / "adapter_model.safetensors")


def _losses(job) -> list[tuple]:
    return [(r["step"], r["train_loss"], r["eval_loss"], r["eval_accuracy"]) for r in job.metrics()]


def _close(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(
        x == y or (x is not None and y is not None and abs(x - y) <= 1e-4 * max(1.0, abs(y)))
        for ra, rb in zip(a, b, strict=True)
        for x, y in zip(ra, rb, strict=True)
    )


def test_two_process_fsdp_run_matches_one_process_writes_once_and_resumes(tmp_path, tiny_model_dir):
    single = train(fsdp_spec(tmp_path, tiny_model_dir, "single"), quiet=True)  # one process: fsdp has no effect
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(fsdp_spec(tmp_path, tiny_model_dir, "runs")))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node=2", "--master_port=29533", "-m", "ftkit", "train", str(job_file), "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # every process reports the job completed: none ends before rank 0 has recorded the result
    assert out.stdout.count("job tiny: completed") == 2 and "running" not in out.stdout, out.stdout

    job = jobstore.get_job("tiny", tmp_path / "runs")
    assert job.record["status"] == "completed" and job.record["world_size"] == 2
    # sharded for real: each process wrote its shards of the model and optimizer (torch.distributed.checkpoint)
    assert (job.path / "checkpoints" / "checkpoint-4" / "pytorch_model_fsdp_0" / ".metadata").is_file()
    assert (job.path / "checkpoints" / "checkpoint-4" / "optimizer_0" / ".metadata").is_file()
    losses = _losses(job)
    assert [r[0] for r in losses] == [1, 2, 2, 3, 4, 4]  # one writer: every step recorded once, 2 evaluations
    assert losses[2][3] is not None  # task metrics scored under FSDP (every process runs the forward)
    assert _close(losses, _losses(single)), (losses, _losses(single))
    assert json.loads((job.path / "best" / "best.json").read_text())["step"] in (2, 4)
    # the adapters gathered from the shards equal the one-process adapters
    ours, theirs = _adapter(job), _adapter(single)
    assert ours.keys() == theirs.keys() and len(ours) == 28
    assert max(float((ours[k] - theirs[k]).abs().max()) for k in ours) < 1e-5
    assert any(float(theirs[k].abs().max()) > 1e-3 for k in theirs if "lora_B" in k)  # it did train

    # a run that died after checkpoint-2: the rerun resumes from it and ends where the uninterrupted run ended
    for gone in ("checkpoints/checkpoint-4", "model", "best"):
        subprocess.run(["rm", "-rf", str(job.path / gone)], check=True)
    job.update(status="failed", pid=None, error="killed")
    again = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "resuming from checkpoint-2 (2 processes)" in (job.path / "job.log").read_text()
    assert jobstore.get_job("tiny", tmp_path / "runs").status == "completed"
    assert _close(_losses(job), losses)
    assert max(float((_adapter(job)[k] - ours[k]).abs().max()) for k in ours) < 1e-5


def test_task_metrics_that_reason_first_are_scored_in_step_by_two_fsdp_processes(tmp_path, tiny_model_dir):
    spec = fsdp_spec(tmp_path, tiny_model_dir, "runs", max_steps=2, label_marker="Answer:")
    spec["hyperparameters"]["n_evals"] = 1
    for split in ("train", "validation"):  # answers that reason first, as the cookbook's
        p = tmp_path / "data" / f"{split}.csv"
        text = p.read_text().replace(",yes\n", ',"It is even.\nAnswer: yes"\n')
        p.write_text(text.replace(",no\n", ',"It is odd.\nAnswer: no"\n'))
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(spec))
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--nproc_per_node=2", "--master_port=29534", "-m", "ftkit", "train", str(job_file), "--quiet"]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert out.stdout.count("job tiny: completed") == 2, out.stdout
    job = jobstore.get_job("tiny", tmp_path / "runs")
    (scored,) = [r for r in job.metrics() if r["eval_accuracy"] is not None]
    assert set(scored["eval_label_shares"]) == {"yes", "no", "maybe"}
    assert "decided after generating up to 'Answer:'" in (job.path / "job.log").read_text()


@pytest.mark.parametrize(
    ("local", "field", "fragment"),
    [
        ({"distributed": "fsdp", "device": "mps"}, "local.distributed", "Apple MPS has no such backend"),
        ({"distributed": "fsdp", "quantization": "4bit"}, "local.quantization", "not sharded by ftkit's FSDP"),
    ],
)
def test_fsdp_combinations_it_cannot_run_are_spec_errors(tmp_path, tiny_model_dir, local, field, fragment):
    spec = fsdp_spec(tmp_path, tiny_model_dir, "runs", **local)
    with pytest.raises(JobSpecError) as e:
        load_job(spec)
    text = str(e.value)
    assert f"{field}:" in text and fragment in text and "allowed:" in text


def test_memory_formula_divides_the_sharded_parts_by_the_processes():
    from ftkit.train.memory import memory_formula

    shape = {"layers": 30, "hidden": 576, "heads": 9, "vocab": 49152, "parameters": 136_000_000}
    shape |= {"trainable": 1_000_000, "quantizable": 100_000_000}
    one = memory_formula(shape, "bf16", "bf16", 2, 512, "cpu")
    four = memory_formula(shape, "bf16", "bf16", 2, 512, "cpu", shards=4)
    assert one.weights == 135_000_000 * 2 + 1_000_000 * 4 and one.optimizer == 8_000_000
    assert (four.weights, four.gradients, four.optimizer) == (one.weights // 4, one.gradients // 4, 2_000_000)
    assert (four.activations, four.logits) == (one.activations, one.logits)  # per process either way
    assert four.shards == 4


def test_estimate_shards_memory_over_processes_for_fsdp_only(tmp_path, tiny_model_dir, capsys):
    from ftkit.cli import main as cli

    spec = fsdp_spec(tmp_path, tiny_model_dir, "runs")
    for name, dist in (("fsdp.json", "fsdp"), ("ddp.json", "ddp")):
        spec["local"]["distributed"] = dist
        (tmp_path / name).write_text(json.dumps(spec))
    got = {}
    for name in ("fsdp.json", "ddp.json"):
        for n in (1, 2):
            assert cli(["estimate", str(tmp_path / name), "--no-measure", "--processes", str(n), "--json"]) == 0
            got[name, n] = json.loads(capsys.readouterr().out)["memory"]
    fsdp1, fsdp2 = got["fsdp.json", 1], got["fsdp.json", 2]
    assert fsdp2["weights"] == fsdp1["weights"] // 2 and fsdp2["shards"] == 2
    assert got["ddp.json", 2]["weights"] == got["ddp.json", 1]["weights"] and got["ddp.json", 2]["shards"] == 1
    assert cli(["estimate", str(tmp_path / "fsdp.json"), "--no-measure", "--processes", "2"]) == 0
    assert "per process, sharded over 2 (fsdp)" in capsys.readouterr().out
    assert cli(["estimate", str(tmp_path / "fsdp.json"), "--processes", "0"]) == 2
    assert "processes must be at least 1, got 0" in capsys.readouterr().err
