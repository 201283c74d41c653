"""The pre-launch estimate: token counts against an independent count, the engine's step arithmetic and
evaluation schedule (checked against a real run on the tiny model), real timed steps on the bundled model,
and an offline hub model that yields no invented numbers."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from ftkit import estimate
from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
from ftkit.models.device import pick_precision
from ftkit.train.engine import train


def read_rows(path: Path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def independent_count(tokenizer, rows: list[dict]) -> tuple[list[int], int]:
    """(tokens per row, answer tokens): the chat template rendered and tokenized in one piece, cut after the
    last EOS; answer tokens are those after the generation prompt."""
    eos = tokenizer.eos_token_id
    lengths, answer = [], 0
    for r in rows:
        user = [{"role": "user", "content": r["prompt"]}]
        text = tokenizer.apply_chat_template(user + [{"role": "assistant", "content": r["answer"]}], tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = ids[: len(ids) - ids[::-1].index(eos)]
        head = tokenizer.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
        lengths.append(len(ids))
        answer += len(ids) - len(tokenizer(head, add_special_tokens=False)["input_ids"])
    return lengths, answer


@pytest.fixture(scope="module")
def pubmedqa_small(tmp_path_factory, pqal_path):
    out = tmp_path_factory.mktemp("pq") / "pubmedqa"
    prepare_pubmedqa(out, source=pqal_path, max_train=16, max_validation=4, max_test=4)
    return out


def pubmedqa_job(data: Path, max_len: int, batch_size: int = 4) -> dict:
    return {
        "name": "estimate-bundled",
        "base_model_id": "bundled",
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "batch_size": batch_size,
            "n_epochs": 2,
            "n_evals": 3,
            "mask_prompt_labels": True,
        },
        "local": {"max_seq_length": max_len, "micro_batch_size": 2},
    }


def test_bundled_estimate_counts_tokens_as_training_does(pubmedqa_small, bundled_model_dir):
    est = estimate(pubmedqa_job(pubmedqa_small, 2048), measure=False)
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    train_len, a_train = independent_count(tok, read_rows(pubmedqa_small / "train.csv"))
    val_len, a_val = independent_count(tok, read_rows(pubmedqa_small / "validation.csv"))
    assert max(train_len + val_len) < 2048  # nothing truncated: the counts are exact
    assert (est.tokens.train, est.tokens.validation) == (sum(train_len), sum(val_len))
    assert est.tokens.longest == max(train_len + val_len)
    # with mask_prompt_labels only the answer and its EOS are trained
    assert (est.tokens.train_trained, est.tokens.validation_trained) == (a_train, a_val)

    s = est.schedule
    assert (s.train_rows, s.validation_rows, s.held_out) == (16, 4, False)
    # 16 rows / micro-batch 2 = 8 micro-batches / accumulation 2 = 4 optimizer steps per epoch, 2 epochs
    assert (s.micro_batch, s.accumulation, s.steps_per_epoch, s.total_steps) == (2, 2, 4, 8)
    assert s.evaluations == [3, 6, 8]
    assert est.priced_tokens == sum(train_len) * 2 + sum(val_len) * 3
    assert est.trained_tokens == a_train * 2
    assert est.timing is None and est.seconds is None

    m = est.memory
    assert m.parameters == 134_515_008 + m.trainable and m.trainable > 0  # SmolLM2-135M + LoRA
    # frozen weights in the precision the engine picks on this machine (bf16 where the CPU runs it natively and
    # faster, else fp32); the trainable LoRA weights always in fp32
    assert m.load_dtype == pick_precision("cpu").name
    frozen = {"fp32": 4, "bf16": 2}[m.load_dtype]
    assert m.weights == 134_515_008 * frozen + m.trainable * 4 and m.optimizer == m.trainable * 8
    assert m.seq == max(train_len + val_len) and m.micro_batch == 2 and m.available > 0


@pytest.mark.slow
def test_bundled_estimate_times_real_training_steps(pubmedqa_small, bundled_model_dir):
    # PubMedQA rows are 300-500 tokens: short rows and one micro-batch per step keep the steps fast on a CPU
    max_len = 96
    est = estimate(pubmedqa_job(pubmedqa_small, max_len, batch_size=2), measure=True, steps=2)
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    train_len, _ = independent_count(tok, read_rows(pubmedqa_small / "train.csv"))
    assert est.tokens.truncated_train == sum(n > max_len for n in train_len) > 0
    assert est.tokens.longest <= max_len

    t = est.timing
    assert t is not None and t.measured_steps == 2 and len(t.step_seconds) == 2 and t.warmup_steps == 1
    assert all(x > 0 for x in t.step_seconds) and t.seconds_per_step > 0
    # each measured step is one micro-batch of 2 rows of at most max_len tokens
    assert all(0 < n <= 2 * max_len for n in t.step_tokens)
    assert est.schedule.total_steps == 16  # 16 rows / batch 2 x 2 epochs
    assert t.train_seconds > 0 and t.eval_seconds > 0 and est.seconds == t.train_seconds + t.eval_seconds
    # the engine's own choices for this model and CPU (SDPA attention -> padded; bf16 only where the CPU runs it
    # natively and faster), not a separate guess
    assert (t.device, t.precision, t.batching) == ("cpu", pick_precision("cpu").name, "padded")
    assert est.memory.measured_peak > 0 and est.memory.seq == est.tokens.longest
    # model FLOPs of each measured step by ftkit.train.flops: at least the 4 x 106M decoder matmul weights a token
    # (LoRA: forward + input gradients), at most 4 x all 134.5M parameters plus attention
    assert len(t.step_flops) == 2
    for flops, tokens in zip(t.step_flops, t.step_tokens, strict=True):
        assert 4 * 106_168_320 < flops / tokens < 4 * 134_515_008
    assert t.model_flops_per_second == pytest.approx(sum(t.step_flops) / sum(t.step_seconds))

    text = str(est)
    assert "s/step over 2 step(s)" in text and "priced tokens" in text and "time estimate" in text
    assert "GFLOP/s" in text and "LM head on targets only" in text
    assert "<table>" in est._repr_html_()
    d = est.to_dict()
    assert d["priced_tokens"] == est.priced_tokens and d["timing"]["seconds_per_step"] == t.seconds_per_step
    json.dumps(d)  # serialisable as is


def test_estimate_matches_a_real_run_of_the_engine(tmp_path, tiny_model_dir):
    """Rows after the 1% hold-out, optimizer and evaluation steps, trained tokens: what train() did."""
    data = tmp_path / "data"
    data.mkdir()
    with open(data / "train.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["question", "reply"])
        for i in range(30):
            w.writerow(
                [
                    f"Question {i}: is {i} a multiple of three?" + " really" * (i % 7),
                    "yes" if i % 3 == 0 else "no",
                ]
            )
    body = {
        "name": "tiny-estimate",
        "base_model_id": str(tiny_model_dir),
        "dataset": {"id": str(data / "train.csv"), "prompt_column": "question", "answer_column": "reply"},
        "hyperparameters": {
            "batch_size": 4,
            "n_epochs": 2,
            "n_evals": 2,
            "mask_prompt_labels": True,
            "learning_rate": 1e-3,
        },
        "local": {"output_dir": str(tmp_path / "runs"), "seed": 3, "max_train_rows": 13},
    }
    est = estimate(body, measure=False)
    assert (est.schedule.train_rows, est.schedule.validation_rows, est.schedule.held_out) == (12, 1, True)
    assert est.timing is None and any("no time is estimated" in m for m in est.missing)

    job = train(body, quiet=True)
    rec, rows = job.record, job.metrics()
    assert (rec["rows"]["train"], rec["rows"]["validation"]) == (12, 1)
    assert est.schedule.total_steps == rec["progress"]["max_steps"] == 6  # 12 rows / 4 = 3 per epoch x 2
    assert est.schedule.evaluations == [r["step"] for r in rows if r["eval_loss"] is not None] == [3, 6]
    last_train = [r for r in rows if r["train_loss"] is not None][-1]
    assert est.trained_tokens == last_train["trained_tokens"]


def test_max_steps_caps_the_schedule_and_says_so(tmp_path, tiny_model_dir):
    data = tmp_path / "d.csv"
    data.write_text("prompt,answer\n" + "".join(f"q{i},a{i}\n" for i in range(40)))
    body = {
        "name": "capped",
        "base_model_id": str(tiny_model_dir),
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {"batch_size": 4, "n_epochs": 3},
        "local": {"max_steps": 5},
    }
    est = estimate(body, measure=False)
    assert (est.schedule.steps_per_epoch, est.schedule.total_steps, est.schedule.max_steps) == (10, 5, 5)
    assert est.schedule.evaluations == [5]
    assert any("max_steps=5 stops after 5 of 30 steps" in n for n in est.notes)
    text = str(est)
    assert "stopped at local.max_steps=5" in text and "time estimate" not in text
    assert "time: not measured" in text


def test_hub_model_offline_states_what_is_missing_and_invents_no_time(tmp_path):
    data = tmp_path / "train.csv"
    data.write_text("prompt,answer\n" + "".join(f"question {i},answer {i}\n" for i in range(40)))
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            {
                "name": "offline",
                "base_model_id": "ftkit-tests/no-such-model-xyz",
                "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
                "hyperparameters": {"batch_size": 8, "n_evals": 1},
            }
        )
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf"), "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-m", "ftkit", "estimate", str(job), "--json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    d = json.loads(run.stdout)
    assert d["tokens"] is None and d["timing"] is None and d["seconds"] is None and d["memory"] is None
    # rows and steps need no model: 40 rows, 1 held out, 39 / 8 -> 5 steps
    assert d["schedule"]["train_rows"] == 39 and d["schedule"]["total_steps"] == math.ceil(39 / 8)
    missing = " | ".join(d["missing"])
    assert "tokenizer of no-such-model-xyz cannot be loaded" in missing
    assert "no time is estimated" in missing and "ftkit-tests/no-such-model-xyz" in missing


def test_estimate_command_reports_an_invalid_job(tmp_path, capsys):
    from ftkit.cli import main

    job = tmp_path / "bad.json"
    job.write_text(
        json.dumps(
            {
                "name": "x",
                "base_model_id": "bundled",
                "dataset": {"id": str(tmp_path / "nope.csv"), "answer_column": "a"},
            }
        )
    )
    assert main(["estimate", str(job), "--no-measure"]) == 1
    assert "nope.csv" in capsys.readouterr().err
