"""The training engine and job store on a tiny random Llama (seconds per test), real signals on real processes."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ftkit.cli import main as cli
from ftkit.job import store as jobstore
from ftkit.train.engine import train
from ftkit.train.plan import eval_schedule

FIELDS = {
    "step",
    "epoch",
    "train_loss",
    "eval_loss",
    "perplexity",
    "learning_rate",
    "tokens_seen",
    "trained_tokens",
    "tokens_per_second",
    "elapsed",
}


def write_csv(path: Path, n: int, start: int = 0) -> Path:
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "answer"])
        for i in range(start, start + n):
            w.writerow([f"Question number {i}: is {i} even?", "yes" if i % 2 == 0 else "no"])
    return path


def make_spec(tmp_path: Path, model: Path, name="tiny", n_train=24, n_val=6, **hp) -> dict:
    data = tmp_path / "data"
    data.mkdir(exist_ok=True)
    write_csv(data / "train.csv", n_train)
    if n_val:
        write_csv(data / "validation.csv", n_val, start=1000)
    local = hp.pop("local", {})
    lora = hp.pop("lora", {})
    return {
        "name": name,
        "base_model_id": str(model),
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "batch_size": 4,
            "learning_rate": 1e-3,
            "lora": {"r": 4, "alpha": 8, **lora},
            **hp,
        },
        "local": {"output_dir": str(tmp_path / "runs"), "seed": 1, **local},
    }


def test_eval_schedule_is_evenly_spaced_and_ends_at_the_last_step():
    assert eval_schedule(10, 2, True) == [5, 10]
    assert eval_schedule(10, 3, True) == [4, 7, 10]
    assert eval_schedule(10, 0, True) == [10]
    assert eval_schedule(10, 5, False) == []


def test_lora_job_completes_with_metrics_evals_and_adapter(tmp_path, tiny_model_dir, capsys):
    spec = make_spec(tmp_path, tiny_model_dir, n_evals=2, n_epochs=2)
    job = train(spec, quiet=True)
    rec = job.record
    assert rec["status"] == "completed" and rec["error"] is None
    assert rec["started_at"] and rec["finished_at"] and rec["versions"]["torch"]
    assert rec["data"]["train"]["sha256"] and rec["rows"] == {
        "train": 24,
        "validation": 6,
        "truncated_train": 0,
        "truncated_validation": 0,
    }
    rows = job.metrics()
    assert all(set(r) >= FIELDS for r in rows)
    train_rows = [r for r in rows if r["train_loss"] is not None]
    eval_rows = [r for r in rows if r["eval_loss"] is not None]
    assert [r["step"] for r in train_rows] == list(range(1, 13))  # 24 rows / batch 4 x 2 epochs
    assert [r["step"] for r in eval_rows] == [6, 12]
    for r in eval_rows:
        assert r["perplexity"] == pytest.approx(math.exp(r["eval_loss"]))
    assert train_rows[-1]["trained_tokens"] > train_rows[0]["trained_tokens"] > 0
    assert train_rows[-1]["tokens_seen"] > 0 and train_rows[-1]["elapsed"] > 0
    model_files = {p.name for p in job.model_dir.iterdir()}
    assert {"adapter_model.safetensors", "adapter_config.json", "tokenizer.json"} <= model_files

    # the CLI shows it
    assert cli(["jobs", "--jobs-dir", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "tiny" in out and "completed" in out
    assert cli(["metrics", "tiny", "--jobs-dir", str(tmp_path / "runs"), "--json"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == len(rows)

    # running the same spec again does not retrain
    mtime = (job.model_dir / "adapter_model.safetensors").stat().st_mtime
    again = train(spec, quiet=True)
    assert again.path == job.path and (job.model_dir / "adapter_model.safetensors").stat().st_mtime == mtime


def test_changed_spec_is_refused_with_what_changed(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, local={"max_steps": 2})
    train(spec, quiet=True)
    spec["hyperparameters"]["learning_rate"] = 2e-3
    with pytest.raises(jobstore.JobError, match=r"learning_rate: 0\.001 -> 0\.002"):
        train(spec, quiet=True)
    job = train(spec, quiet=True, fresh=True)
    assert job.status == "completed" and job.record["spec"]["hyperparameters"]["learning_rate"] == 2e-3


def test_changed_data_is_refused(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, local={"max_steps": 2})
    train(spec, quiet=True)
    write_csv(tmp_path / "data" / "train.csv", 25)
    with pytest.raises(jobstore.JobError, match="data.train"):
        train(spec, quiet=True)


def test_best_checkpoint_is_the_lowest_eval_loss(tmp_path, tiny_model_dir):
    # a learning rate this high makes later evaluations worse than the first on a random tiny model
    spec = make_spec(tmp_path, tiny_model_dir, n_evals=4, n_epochs=2, best_checkpoints=True, learning_rate=1e-2)
    job = train(spec, quiet=True)
    evals = [r for r in job.metrics() if r["eval_loss"] is not None]
    best = min(evals, key=lambda r: r["eval_loss"])
    assert job.record["result"]["step"] == best["step"]
    assert job.record["result"]["eval_loss"] == pytest.approx(best["eval_loss"])
    assert json.loads((job.model_dir / "best.json").read_text())["step"] == best["step"]


def test_full_finetune_saves_a_whole_model(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, lora={"enabled": False}, local={"max_steps": 2})
    job = train(spec, quiet=True)
    assert (job.model_dir / "model.safetensors").is_file()
    assert not (job.model_dir / "adapter_config.json").exists()


def test_holdout_when_no_validation_file(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, n_train=200, n_val=0, local={"max_steps": 1})
    job = train(spec, quiet=True)
    assert job.record["rows"]["train"] == 198 and job.record["rows"]["validation"] == 2
    assert "held out" in (job.path / "job.log").read_text()


def test_nan_loss_fails_with_the_step(tmp_path, tiny_model_dir):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    broken = tmp_path / "broken-model"
    m = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        m.model.norm.weight.fill_(float("nan"))
    m.save_pretrained(broken)
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(broken)
    spec = make_spec(tmp_path, broken, local={"max_steps": 3})
    with pytest.raises(jobstore.JobError, match="loss became nan at step 1"):
        train(spec, quiet=True)
    rec = jobstore.get_job("tiny", tmp_path / "runs").record
    assert rec["status"] == "failed" and "step 1" in rec["error"]


def _train_process(tmp_path: Path, spec: dict, *extra: str) -> subprocess.Popen:
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(spec))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "ftkit", "train", str(job_file), "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )


def _wait_for_steps(job_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    t = time.time()
    while time.time() - t < timeout:
        rows = jobstore.read_metrics(job_dir / "metrics.jsonl")
        if len([r for r in rows if r["train_loss"] is not None]) >= n:
            return
        if proc.poll() is not None:
            raise AssertionError(f"training exited early:\n{proc.stdout.read()}")
        time.sleep(0.05)
    raise AssertionError("training did not reach the step in time")


def _assert_contiguous(job: jobstore.Job, total: int) -> None:
    steps = [r["step"] for r in job.metrics() if r["train_loss"] is not None]
    assert steps == list(range(1, total + 1)), steps


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_cancels_keeps_checkpoint_and_resumes(tmp_path, tiny_model_dir, sig):
    spec = make_spec(tmp_path, tiny_model_dir, n_train=400, n_val=4, local={"save_steps": 1000})
    proc = _train_process(tmp_path, spec)
    job_dir = tmp_path / "runs" / "tiny"
    _wait_for_steps(job_dir, 5, proc)
    proc.send_signal(sig)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 1, out
    job = jobstore.get_job(str(job_dir))
    assert job.status == "cancelled", out
    ckpts = sorted((job_dir / "checkpoints").glob("checkpoint-*"))
    assert ckpts, "a checkpoint is saved at the cancelled step"
    stopped_at = int(ckpts[-1].name.split("-")[1])

    proc = _train_process(tmp_path, spec)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert f"resuming at step {stopped_at}" in (job_dir / "job.log").read_text()  # --quiet prints only the result
    job = jobstore.get_job(str(job_dir))
    assert job.status == "completed"
    _assert_contiguous(job, 100)


def test_kill9_mid_epoch_resumes(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, n_train=400, n_val=4, local={"save_steps": 3})
    proc = _train_process(tmp_path, spec)
    job_dir = tmp_path / "runs" / "tiny"
    _wait_for_steps(job_dir, 8, proc)
    proc.kill()
    proc.wait()
    job = jobstore.get_job(str(job_dir))
    assert job.record["status"] == "running"  # nobody could record anything...
    assert job.status == "failed" and job.error == jobstore.INTERRUPTED  # ...but every reader sees it ended

    proc = _train_process(tmp_path, spec)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0, out
    assert "resuming at step" in (job_dir / "job.log").read_text()
    job = jobstore.get_job(str(job_dir))
    assert job.status == "completed"
    _assert_contiguous(job, 100)


def test_out_of_memory_fails_with_advice(tmp_path, tiny_model_dir):
    """A real allocation failure: the process gets an address-space limit and a batch whose logits cannot fit."""
    spec = make_spec(
        tmp_path,
        tiny_model_dir,
        n_train=64,
        n_val=0,
        batch_size=32,
        local={"max_steps": 1, "max_seq_length": 2048},
    )
    # long rows: 32 x ~2000 tokens x 49k vocab of fp32 logits is ~13 GB
    with open(tmp_path / "data" / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["prompt", "answer"])
        for i in range(64):
            w.writerow([f"{i} " + "word " * 2000, "yes"])
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(spec))
    code = (
        "import resource, sys\n"
        "import torch, transformers, peft\n"  # import first: the limit is on what training allocates
        "from ftkit.cli import main\n"
        "use = int(open('/proc/self/statm').read().split()[0]) * resource.getpagesize()\n"
        "resource.setrlimit(resource.RLIMIT_AS, (use + 6 * 2**30, resource.RLIM_INFINITY))\n"
        f"sys.exit(main(['train', {str(job_file)!r}, '--quiet']))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 1, out.stdout + out.stderr
    rec = jobstore.get_job("tiny", tmp_path / "runs").record
    assert rec["status"] == "failed"
    assert "out of memory at batch_size=32" in rec["error"] and "max_seq_length=2048" in rec["error"]
    assert "lower local.micro_batch_size" in rec["error"]


def test_two_process_ddp_run(tmp_path, tiny_model_dir):
    spec = make_spec(
        tmp_path, tiny_model_dir, n_train=32, n_val=8, n_evals=2, batch_size=8, local={"micro_batch_size": 2}
    )
    job_file = tmp_path / "job.json"
    job_file.write_text(json.dumps(spec))
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(
        [
            str(torchrun),
            "--nproc_per_node=2",
            "--master_port=29531",
            "-m",
            "ftkit",
            "train",
            str(job_file),
            "--quiet",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    job = jobstore.get_job("tiny", tmp_path / "runs")
    rec = job.record
    assert rec["status"] == "completed" and rec["world_size"] == 2
    rows = job.metrics()
    train_rows = [r for r in rows if r["train_loss"] is not None]
    assert [r["step"] for r in train_rows] == [
        1,
        2,
        3,
        4,
    ]  # 32 rows / effective batch 8: one writer, no duplicates
    assert all(math.isfinite(r["train_loss"]) for r in train_rows)
    assert len([r for r in rows if r["eval_loss"] is not None]) == 2
    assert (job.model_dir / "adapter_model.safetensors").is_file()

    # running the completed job again returns at once on every rank (rank 1 used to wait at a barrier rank 0 had
    # left, because it read the previous run's resume decision)
    again = subprocess.run(out.args, capture_output=True, text=True, timeout=300, env=env)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "job tiny: completed" in again.stdout and job.metrics() == rows


@pytest.mark.parametrize("batching", ["padded", "padding_free"])
def test_loss_on_target_positions_only_matches_the_models_own_loss(tmp_path, tiny_model_dir, batching):
    """The engine projects only positions with a target onto the vocabulary; loss and LoRA gradients must equal
    the model's own full-logits loss, per batch (evaluation) and normalised over an accumulated batch (training)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from ftkit.data.encoding import encode_rows, padded_collator, padding_free_collator
    from ftkit.models.loading import apply_lora
    from ftkit.train.trainer import CountingTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_model_dir), 4, 8, 0.0, None)
    torch.manual_seed(0)
    for n, p in model.named_parameters():
        if "lora_B" in n:  # non-zero B so that LoRA A gets a gradient too
            p.data.normal_(0, 0.02)
    rows = encode_rows(tok, [f"question {i} " * (i + 1) for i in range(4)], ["yes", "no", "maybe", "no"], 64, True)
    collate = padded_collator(tok) if batching == "padded" else padding_free_collator()
    batch = collate(rows.examples)
    n_targets = int((batch["labels"][..., 1:] != -100).sum())
    args = TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True, report_to=[])
    trainer = CountingTrainer(model=model, args=args)

    def grads(loss):
        model.zero_grad()
        loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    own = model(**batch).loss
    own_grads = grads(own)
    mean = trainer.compute_loss(model, dict(batch))
    torch.testing.assert_close(mean, own, rtol=1e-5, atol=1e-6)
    for name, g in grads(mean).items():
        torch.testing.assert_close(g, own_grads[name], rtol=1e-4, atol=1e-7)
    # accumulated: twice as many targets in the whole batch -> half the loss, as the model's own loss
    summed = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(2 * n_targets))
    torch.testing.assert_close(summed, own / 2, rtol=1e-5, atol=1e-6)
    assert n_targets == rows.n_trained_tokens
    _, out = trainer.compute_loss(model, dict(batch), return_outputs=True)
    assert out.logits.shape == (n_targets, len(tok))  # only the target positions were projected


def test_trainable_layers_adapts_only_the_last_layers_and_rejects_too_many(tmp_path, tiny_model_dir):
    from safetensors.torch import load_file

    job = train(make_spec(tmp_path, tiny_model_dir, local={"max_steps": 1, "trainable_layers": 1}), quiet=True)
    names = list(load_file(job.model_dir / "adapter_model.safetensors"))
    assert names and all(".layers.1." in n for n in names)  # the tiny model has layers 0 and 1
    assert "LoRA: 8,192 trainable" not in (job.path / "job.log").read_text()  # half the all-layer count
    assert job.record["parameters"]["trainable"] == 4096

    full = make_spec(tmp_path, tiny_model_dir, name="full1", lora={"enabled": False}, local={"max_steps": 1})
    full["local"]["trainable_layers"] = 1
    rec = train(full, quiet=True).record
    assert rec["parameters"]["trainable"] < rec["parameters"]["total"] / 2  # embeddings and layer 0 frozen

    bad = make_spec(tmp_path, tiny_model_dir, name="bad", local={"max_steps": 1, "trainable_layers": 3})
    with pytest.raises(jobstore.JobError, match="trainable_layers is 3, but the model has only 2 transformer layers"):
        train(bad, quiet=True)
