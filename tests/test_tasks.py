"""Task metrics during training (accuracy, macro-F1, AUC, shares at every evaluation) and checkpoint selection by
them, on the tiny random Llama; the label reading they share with evaluation."""

from __future__ import annotations

import csv
import json
import tarfile

import pytest

from ftkit.data.labels import LabelReader
from ftkit.export.stage import export_job
from ftkit.job.problems import JobSpecError
from ftkit.job.spec import load_job
from ftkit.job.store import JobError
from ftkit.results.scores import margin_auc
from ftkit.train.engine import train
from tests.test_train import make_spec

TASK = ("eval_accuracy", "eval_macro_f1", "eval_auc", "eval_label_shares", "eval_collapsed")


def evals(job) -> list[dict]:
    return [r for r in job.metrics() if r["eval_loss"] is not None]


def test_label_reader_takes_the_column_first_then_the_answers_first_word():
    r = LabelReader(("yes", "no", "maybe"))
    assert r.row_label("No", "yes. it does") == "no"
    assert r.row_label("", "Maybe. unclear") == "maybe"
    assert r.row_label(None, "yesterday it rained") is None  # whole words only
    assert r.row_label("perhaps", "yes") is None  # a column value that is not a label is not replaced


def test_margin_auc_counts_ties_half_and_ignores_other_labels():
    gold = ["yes", "no", "yes", "no", "maybe"]
    logps = [[0, -1, 0], [-1, 0, 0], [0.5, 0, 0], [0.5, 0, 0], [9, -9, 0]]
    assert margin_auc(gold, logps, ("yes", "no", "maybe")) == pytest.approx(3.5 / 4)
    assert margin_auc(["yes", "yes"], [[0, 1, 0], [1, 0, 0]], ("yes", "no", "maybe")) is None


def test_every_evaluation_records_task_metrics_and_the_log_says_where_labels_came_from(tmp_path, tiny_model_dir):
    job = train(make_spec(tmp_path, tiny_model_dir, n_evals=2, n_epochs=2), quiet=True)
    rows = evals(job)
    assert [r["step"] for r in rows] == [6, 12]
    for r in rows:
        assert 0 <= r["eval_accuracy"] <= 1 and 0 <= r["eval_macro_f1"] <= 1 and 0 <= r["eval_auc"] <= 1
        assert set(r["eval_label_shares"]) == {"yes", "no", "maybe"}
        assert sum(r["eval_label_shares"].values()) == pytest.approx(1, abs=1e-3)
        assert r["eval_collapsed"] in (None, "yes", "no", "maybe")
    assert all(r[k] is None for r in job.metrics() if r["train_loss"] is not None for k in TASK)
    log = (job.path / "job.log").read_text()
    assert "task metrics on: labels ['yes', 'no', 'maybe'] from the answers' first words" in log
    assert log.count("evaluation at step") == 2


def test_free_text_answers_train_without_task_metrics(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, n_evals=1, local={"max_steps": 2})
    for name in ("train.csv", "validation.csv"):
        p = tmp_path / "data" / name
        text = p.read_text().replace(",yes", ",it is even").replace(",no", ",it is odd")
        p.write_text(text)
    job = train(spec, quiet=True)
    assert job.status == "completed"
    assert all(r[k] is None for r in job.metrics() for k in TASK)
    assert "task metrics off: 6 of 6 validation rows" in (job.path / "job.log").read_text()


def test_a_label_column_gives_the_gold_labels(tmp_path, tiny_model_dir):
    data = tmp_path / "reviews"
    data.mkdir()
    for name, n in (("train.csv", 12), ("validation.csv", 4)):
        with open(data / name, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["prompt", "answer", "sentiment"])
            for i in range(n):
                w.writerow(
                    [f"Review {i}: {'great' if i % 2 else 'awful'} film", "A short review.", "pos neg".split()[i % 2]]
                )
    spec = make_spec(tmp_path, tiny_model_dir, n_evals=1, local={"labels": ["pos", "neg"], "label_column": "sentiment"})
    spec["dataset"]["id"] = str(data)
    job = train(spec, quiet=True)
    (row,) = evals(job)
    assert set(row["eval_label_shares"]) == {"pos", "neg"}
    assert "labels ['pos', 'neg'] from column sentiment" in (job.path / "job.log").read_text()


def test_asking_for_labels_the_rows_lack_fails_before_training_and_names_the_rows(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, n_evals=1, local={"labels": ["even", "odd"]})
    with pytest.raises(JobError, match=r"6 of 6 validation rows \(first: \[1, 2, 3, 4, 5\]\) have no label"):
        train(spec, quiet=True)


def test_a_task_best_metric_with_labels_turned_off_is_a_spec_problem(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, local={"labels": [], "best_metric": "eval_macro_f1"})
    with pytest.raises(JobSpecError, match=r"local\.best_metric: is a task metric, but local\.labels \[\]"):
        load_job(spec)


def test_best_checkpoint_by_macro_f1_is_the_highest_macro_f1_and_the_record_says_why(tmp_path, tiny_model_dir):
    spec = make_spec(
        tmp_path,
        tiny_model_dir,
        n_evals=4,
        n_epochs=2,
        best_checkpoints=True,
        learning_rate=1e-2,
        local={"best_metric": "eval_macro_f1"},
    )
    job = train(spec, quiet=True)
    rows = evals(job)
    best = max(rows, key=lambda r: (r["eval_macro_f1"], -r["eval_loss"]))
    result = job.record["result"]
    assert result["step"] == best["step"] and result["metric"] == "eval_macro_f1"
    assert result["value"] == pytest.approx(best["eval_macro_f1"])
    assert result["why"].startswith(f"highest eval_macro_f1 ({best['eval_macro_f1']:.4f}) of 4 evaluation(s)")
    saved = json.loads((job.model_dir / "best.json").read_text())
    assert saved["step"] == best["step"] and saved["eval_macro_f1"] == pytest.approx(best["eval_macro_f1"])
    assert f"result: best checkpoint (step {best['step']})" in (job.path / "job.log").read_text()


def test_metrics_csv_of_an_export_writes_label_shares_as_json(tmp_path, tiny_model_dir):
    job = train(make_spec(tmp_path, tiny_model_dir, n_evals=1, local={"max_steps": 2}), quiet=True)
    with tarfile.open(export_job(job.path, tmp_path / "x.tar.gz", quiet=True)) as tar:
        text = tar.extractfile("metrics.csv").read().decode()
    last = list(csv.DictReader(text.splitlines()))[-1]
    assert json.loads(last["eval_label_shares"]).keys() == {"yes", "no", "maybe"}
    assert float(last["eval_accuracy"]) >= 0


@pytest.mark.parametrize("batching", ["padded", "padding_free"])
def test_row_weights_scale_each_rows_target_tokens_in_the_loss(tmp_path, tiny_model_dir, batching):
    """Class weights: the engine's loss equals the hand-computed weighted sum of per-token cross-entropies."""
    import torch
    import torch.nn.functional as F
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainingArguments

    from ftkit.data.encoding import collator_for, encode_rows
    from ftkit.train.trainer import CountingTrainer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    rows = encode_rows(tok, [f"question {i} " * (i + 1) for i in range(3)], ["yes", "no", "maybe"], 64, True)
    weights = [0.5, 2.0, 3.0]
    examples = [{**e, "weight": w} for e, w in zip(rows.examples, weights, strict=True)]
    batch = collator_for(batching, tok, weighted=True)(examples)
    assert batch["token_weights"].shape == batch["labels"].shape
    trainer = CountingTrainer(model=model, args=TrainingArguments(output_dir=str(tmp_path / "o"), use_cpu=True))
    n = torch.tensor(7)
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=n)
    expected = torch.tensor(0.0)
    for e, w in zip(rows.examples, weights, strict=True):  # one row at a time, no padding
        ids, labels = torch.tensor([e["input_ids"]]), torch.tensor([e["labels"]])
        logits = model(input_ids=ids).logits[0, :-1]
        ce = F.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum")
        expected = expected + w * ce
    torch.testing.assert_close(loss, expected / n, rtol=1e-4, atol=1e-5)


def test_balanced_class_weights_are_logged_and_need_labelled_training_rows(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, n_evals=1, local={"max_steps": 2, "class_weights": "balanced"})
    train_csv = tmp_path / "data" / "train.csv"
    lines = train_csv.read_text().splitlines()
    # 24 rows: 12 yes / 12 no -> make it 18 yes / 6 no so the weights differ
    lines = [lines[0]] + [line.replace(",no", ",yes") if i % 4 != 1 else line for i, line in enumerate(lines[1:])]
    train_csv.write_text("\n".join(lines) + "\n")
    job = train(spec, quiet=True)
    log = (job.path / "job.log").read_text()
    assert "class_weights balanced: loss weight per label {'no': 2.0, 'yes': 0.667}" in log
    lines[1] = lines[1].replace(",yes", ",it is even").replace(",no", ",it is odd")
    train_csv.write_text("\n".join(lines) + "\n")
    spec["name"] = "unlabelled"
    with pytest.raises(JobError, match=r"class_weights balanced needs a label on every training row; 1 have none"):
        train(spec, quiet=True)


# ------------------------------------------------------------------------------------- reason, then answer


def test_label_reader_with_a_marker_reads_the_word_after_the_last_marker():
    r = LabelReader(("yes", "no", "maybe"), marker="Answer:")
    assert r.from_answer("No effect was seen.\nAnswer: no") == "no"
    assert r.from_answer("Answer: maybe. Then more text.\nAnswer: yes") == "yes"
    assert r.from_answer("yes, it works") is None  # without the marker there is no label


def test_reason_style_rows_put_the_conclusion_before_the_decision(pqal_path, tmp_path):
    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa

    ds = prepare_pubmedqa(tmp_path / "r", source=pqal_path, answer_style="reason", max_train=4, max_validation=2)
    rows = list(csv.DictReader(open(ds.train, encoding="utf-8")))
    for row in rows:
        conclusion, decision = row["answer"].rsplit("\nAnswer: ", 1)
        assert decision == row["final_decision"] and len(conclusion) > 20
        assert row["prompt"].endswith("then answer yes, no or maybe after 'Answer:'.")


def test_reason_method_generates_up_to_the_marker_then_scores_the_labels(tmp_path, tiny_model_dir, bundled_model_dir):
    from ftkit.results.evaluation import evaluate
    from ftkit.results.inference import load_for_inference
    from ftkit.results.reasoning import label_tokens_after

    data = tmp_path / "d.csv"
    data.write_text("pmid,prompt,answer,final_decision\n1,Q one?,It works.\\nAnswer: yes,yes\n2,Q two?,No.,no\n")
    loaded = load_for_inference(str(tiny_model_dir), device="cpu")
    result = evaluate(loaded, data, tmp_path / "p.json", method="reason", max_new_tokens=6)
    assert result.method == "reason" and set(result.predictions) == {"1", "2"}
    assert all("reasoning" in r and set(r["logprobs"]) == {"yes", "no", "maybe"} for r in result.rows)
    assert any("after the generated reasoning and 'Answer:'" in n for n in result.notes)
    tok = loaded[1]
    firsts = label_tokens_after(tok, ("yes", "no", "maybe"), "Answer:")
    assert [tok.decode([t]) for t in firsts.values()] == [" yes", " no", " maybe"]  # as training data spells them


def test_task_metrics_with_a_label_marker_decide_after_generating(tmp_path, tiny_model_dir):
    spec = make_spec(tmp_path, tiny_model_dir, n_evals=1, local={"max_steps": 2, "label_marker": "Answer:"})
    for name in ("train.csv", "validation.csv"):
        p = tmp_path / "data" / name
        lines = p.read_text().splitlines()
        out = [lines[0]] + [
            line.replace(",yes", ',"It is even.\nAnswer: yes"').replace(",no", ',"It is odd.\nAnswer: no"')
            for line in lines[1:]
        ]
        p.write_text("\n".join(out) + "\n")
    job = train(spec, quiet=True)
    (row,) = evals(job)
    assert 0 <= row["eval_accuracy"] <= 1 and set(row["eval_label_shares"]) == {"yes", "no", "maybe"}
    assert "decided after generating up to 'Answer:'" in (job.path / "job.log").read_text()


def test_scoring_from_the_generation_cache_gives_the_two_pass_scores_whether_the_marker_is_generated_or_appended(
    bundled_model_dir,
):
    from ftkit.results.inference import load_for_inference
    from ftkit.results.reasoning import score_after_reasoning, score_after_reasoning_twice

    model, tok = load_for_inference(str(bundled_model_dir), device="cpu")
    prompts = [
        "Is the sky blue? Explain briefly, then answer yes or no after 'Answer:'.",
        "Does aspirin prevent heart attacks in every adult? Explain in one sentence, then write 'Answer:' and yes, "
        "no or maybe.",
        "Is water wet?",
        "Four, the last one?",
    ]
    # SmolLM2 writes "The sky is not blue. The answer is no." to the first prompt: with that marker one batch holds a
    # row that generates the marker, one that ends early ("No") and two cut at max_new_tokens (marker appended)
    marker, labels = "The answer is", ("yes", "no", "maybe")
    fast = score_after_reasoning(model, tok, prompts, labels, marker, max_new_tokens=16, batch_size=4)
    slow = score_after_reasoning_twice(model, tok, prompts, labels, marker, 16, batch_size=4)
    assert fast[2][0] == "The sky is not blue." and fast[2][1] == "No"
    assert fast[0] == slow[0] and fast[2] == slow[2]
    for a, b in zip(fast[1], slow[1], strict=True):
        assert a == pytest.approx(b, abs=1e-3)


def test_a_model_without_sdpa_attention_is_scored_by_the_two_pass_reference(bundled_model_dir):
    # the slots hand SDPA a boolean 4-D mask, which eager attention would add to its scores instead of masking
    from ftkit.results.decoding import slots_supported
    from ftkit.results.inference import load_for_inference
    from ftkit.results.reasoning import score_after_reasoning, score_after_reasoning_twice

    model, tok = load_for_inference(str(bundled_model_dir), device="cpu")
    assert slots_supported(model)
    model.set_attn_implementation("eager")
    assert not slots_supported(model)
    prompts = ["Is the sky blue? Explain briefly, then answer yes or no after 'Answer:'.", "Is water wet?", "Why?"]
    args = (model, tok, prompts, ("yes", "no", "maybe"), "Answer:")
    assert score_after_reasoning(*args, 12, 2) == score_after_reasoning_twice(*args, 12, 2)
