"""End to end on the real bundled SmolLM2-135M-Instruct and real PubMedQA rows, through the CLI."""

import json

import pytest

from ftkit.cli import main as cli
from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
from ftkit.job import store as jobstore


@pytest.mark.slow
def test_bundled_model_learns_repeated_pubmedqa_batches(tmp_path, pqal_path, bundled_model_dir, capsys):
    data = prepare_pubmedqa(
        tmp_path / "pubmedqa",
        source=pqal_path,
        max_train=8,
        max_validation=2,
        max_test=3,
        answer_style="decision",
    )
    job_file = tmp_path / "job.json"
    job_file.write_text(
        json.dumps(
            {
                "name": "pubmedqa-e2e",
                "base_model_id": "bundled",
                "dataset": {"id": str(data.out), "prompt_column": "prompt", "answer_column": "answer"},
                # 8 rows, batch 4, 3 epochs: the same two batches three times over
                "hyperparameters": {
                    "n_epochs": 3,
                    "n_evals": 1,
                    "batch_size": 4,
                    "learning_rate": 2e-3,
                    "mask_prompt_labels": True,
                    "lora": {"r": 8, "alpha": 16},
                },
                "local": {"max_seq_length": 384, "output_dir": str(tmp_path / "runs"), "precision": "fp32"},
            }
        )
    )
    assert cli(["train", str(job_file), "--quiet"]) == 0
    job = jobstore.get_job("pubmedqa-e2e", tmp_path / "runs")
    assert job.status == "completed"
    rows = [r for r in job.metrics() if r["train_loss"] is not None]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    first_epoch = (rows[0]["train_loss"] + rows[1]["train_loss"]) / 2
    last_epoch = (rows[4]["train_loss"] + rows[5]["train_loss"]) / 2
    assert last_epoch < 0.7 * first_epoch, [r["train_loss"] for r in rows]
    # every answer ("yes"/"no"/"maybe" + EOS) is trained, even in rows whose prompt was shortened to fit
    assert rows[-1]["trained_tokens"] >= 6 * 4 * 2
    assert (job.model_dir / "adapter_model.safetensors").is_file()
    assert (job.model_dir / "chat_template.jinja").is_file() or "chat_template" in (
        job.model_dir / "tokenizer_config.json"
    ).read_text()
    assert job.record["rows"]["train"] == 8 and job.record["model"]["kind"] == "bundled"
    assert [r["step"] for r in job.metrics() if r["eval_loss"] is not None] == [6]

    capsys.readouterr()
    assert cli(["jobs", "--jobs-dir", str(tmp_path / "runs"), "--status", "completed"]) == 0
    assert "pubmedqa-e2e" in capsys.readouterr().out
