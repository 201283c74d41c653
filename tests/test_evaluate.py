"""Evaluation and "try it" generation on real PubMedQA rows: the bundled SmolLM2 for scoring, a tiny random
Llama (and tiny jobs trained from it) for everything that does not need a real model."""

from __future__ import annotations

import csv
import json
import math
import re

import pytest

from ftkit.cli import main as cli
from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
from ftkit.results.evaluation import EvalDataError, compare, evaluate, read_eval_data, score_against_truth
from ftkit.results.figures import plot_confusion
from ftkit.results.generation import generate, sample_answers
from ftkit.results.inference import ModelRefError, label_token_ids, load_for_inference, next_token_logprobs
from ftkit.results.scores import EvalResult, classification_metrics

LABELS = ("yes", "no", "maybe")


def csv_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def plain_metrics(gold: list[str], pred: list[str]) -> tuple[float, float]:
    """Accuracy and macro-F1 the textbook way: F1 = harmonic mean of precision and recall, averaged over the
    classes that occur in gold or predictions (sklearn's behaviour without an explicit label list)."""
    acc = sum(g == p for g, p in zip(gold, pred, strict=True)) / len(gold)
    f1s = []
    for c in sorted(set(gold) | set(pred)):
        tp = sum(g == c == p for g, p in zip(gold, pred, strict=True))
        n_pred, n_gold = pred.count(c), gold.count(c)
        prec = tp / n_pred if n_pred else 0.0
        rec = tp / n_gold if n_gold else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return acc, sum(f1s) / len(f1s)


@pytest.fixture(scope="module")
def pqa(tmp_path_factory, pqal_path):
    """A stratified 12-row subset of the official test split (and small train/validation for tiny jobs)."""
    return prepare_pubmedqa(
        tmp_path_factory.mktemp("pqa"), source=pqal_path, max_test=12, max_train=8, max_validation=4
    )


@pytest.fixture(scope="module")
def bundled_loaded(bundled_model_dir):
    return load_for_inference("bundled", device="cpu")


@pytest.fixture(scope="module")
def bundled_result(pqa, tmp_path_factory, bundled_model_dir):
    out = tmp_path_factory.mktemp("eval") / "predictions.json"
    return evaluate("bundled", pqa.test, out, batch_size=4, device="cpu")


# ------------------------------------------------------------------------------------ real model scoring


@pytest.mark.slow
def test_evaluation_writes_official_predictions_and_correct_metrics(pqa, bundled_result):
    r = bundled_result
    rows = csv_rows(pqa.test)
    assert len(rows) == 12
    preds = json.loads(open(r.predictions_path).read())
    assert list(preds) == [row["pmid"] for row in rows]  # exactly the file's PMIDs, in its order
    assert set(preds.values()) <= set(LABELS)
    gold = [row["final_decision"] for row in rows]
    pred = [preds[row["pmid"]] for row in rows]
    acc, macro = plain_metrics(gold, pred)
    assert r.accuracy == pytest.approx(acc) and r.macro_f1 == pytest.approx(macro)
    assert sum(sum(v.values()) for v in r.confusion.values()) == 12
    for g in LABELS:
        assert sum(r.confusion[g].values()) == gold.count(g) == r.per_class[g]["support"]
    assert sum(r.shares.values()) == pytest.approx(1.0)
    assert all(r.shares[c] == pytest.approx(pred.count(c) / 12) for c in LABELS)

    saved = json.loads(open(r.metrics_path).read())
    assert r.metrics_path.endswith("predictions.metrics.json")
    assert saved["accuracy"] == pytest.approx(acc) and saved["n"] == 12 and len(saved["rows"]) == 12
    assert saved["collapsed"] == r.collapsed
    text = str(r)
    assert "macro-F1" in text and "gold \\ predicted" in text and "label tokens: yes='yes'" in text
    assert "<table>" in r._repr_html_()
    if r.collapsed:  # the untuned SmolLM2 answers nearly everything one way
        assert "WARNING: predictions collapsed" in text


@pytest.mark.slow
def test_scoring_reads_the_token_training_teaches(pqa, bundled_result, bundled_loaded):
    import torch

    from ftkit.data.encoding import encode_row

    model, tok = bundled_loaded
    row = csv_rows(pqa.test)[0]
    ids, labels = encode_row(tok, row["prompt"], row["answer"], mask_prompt=True)
    first = next(i for i, lab in enumerate(labels) if lab != -100)  # the first trained token
    assert ids[first] == label_token_ids(tok)[row["final_decision"]]
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([ids[:first]])).logits[0, -1]
    expected = torch.log_softmax(logits, -1)[ids[first]].item()
    assert bundled_result.rows[0]["logprobs"][row["final_decision"]] == pytest.approx(expected, abs=1e-4)


@pytest.mark.slow
def test_batched_scoring_matches_batch_size_one(pqa, bundled_result, bundled_loaded):
    single = evaluate("bundled", pqa.test, None, batch_size=1, limit=6, loaded=bundled_loaded)
    assert single.predictions == dict(list(bundled_result.predictions.items())[:6])
    for a, b in zip(single.rows, bundled_result.rows[:6], strict=True):
        for label in LABELS:
            assert a["logprobs"][label] == pytest.approx(b["logprobs"][label], abs=1e-3)


@pytest.mark.slow
def test_generate_batched_equals_one_by_one(bundled_loaded):
    prompts = ["Is the sky blue on a clear day? Answer yes or no.", "Name a primary colour."]
    both = generate(bundled_loaded, prompts, max_new_tokens=12)
    one = [generate(bundled_loaded, p, max_new_tokens=12)[0] for p in prompts]
    assert both == one and all(both)


def test_labels_sharing_a_first_token_are_refused(tiny_model_dir, pqa):
    model, tok = load_for_inference(str(tiny_model_dir), device="cpu")
    assert len(set(label_token_ids(tok).values())) == 3
    with pytest.raises(ValueError, match=r"'maybe', 'maybe not' all start with token 'maybe'"):
        label_token_ids(tok, ("yes", "no", "maybe", "maybe not"))
    with pytest.raises(ValueError, match="method='generate'"):
        evaluate("tiny", pqa.test, None, labels=("yes", "no", "maybe", "maybe not"), loaded=(model, tok))


# ----------------------------------------------------------------------------------- metrics, truth file


def test_metrics_follow_sklearn_conventions_and_flag_collapse():
    gold = ["yes", "yes", "no", "no", "yes"]
    pred = ["yes", "no", "no", "no", "yes"]
    m = classification_metrics(gold, pred, LABELS)
    assert m["macro_over"] == ["yes", "no"]  # no "maybe" in gold or predictions: not averaged
    assert m["macro_f1"] == pytest.approx(plain_metrics(gold, pred)[1])
    assert m["per_class"]["maybe"] == {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "support": 0,
        "predicted": 0,
    }
    assert m["collapsed"] is None
    # a predicted class without support is averaged in with F1 0
    m2 = classification_metrics(["yes", "no"], ["maybe", "no"], LABELS)
    assert m2["macro_over"] == list(LABELS) and m2["macro_f1"] == pytest.approx(1 / 3)

    gold = ["yes"] * 6 + ["no"] * 3 + ["maybe"]
    nine = EvalResult.build("m", "d", "score", LABELS, [str(i) for i in range(10)], gold, ["yes"] * 9 + ["no"])
    eight = classification_metrics(gold, ["yes"] * 8 + ["no", "maybe"], LABELS)
    assert nine.collapsed == "yes" and eight["collapsed"] is None
    assert "WARNING: predictions collapsed: 'yes' is 90% of predictions" in str(nine)
    assert sum(nine.shares.values()) == pytest.approx(1.0)


def test_plot_confusion_shows_every_count():
    import matplotlib

    matplotlib.use("Agg")
    r = EvalResult.build(
        "m",
        "d",
        "score",
        LABELS,
        ["1", "2", "3", "4"],
        ["yes", "no", "maybe", "yes"],
        ["yes", "yes", "no", "yes"],
    )
    ax = plot_confusion(r)
    counts = [int(t.get_text()) for t in ax.texts]
    assert len(counts) == 9 and sum(counts) == 4 and max(counts) == 2


def test_score_against_truth_matches_the_official_majority_baseline(test_truth_path, tmp_path):
    truth = json.loads(test_truth_path.read_text())
    assert len(truth) == 500
    all_yes = tmp_path / "yes.json"
    all_yes.write_text(json.dumps({k: "yes" for k in truth}))
    r = score_against_truth(all_yes, test_truth_path)
    assert r.accuracy == pytest.approx(0.552) and r.macro_f1 == pytest.approx(0.2371, abs=1e-4)
    assert r.collapsed == "yes" and r.n == 500

    flipped = dict(truth)
    for k in list(truth)[:10]:
        flipped[k] = "no" if truth[k] != "no" else "maybe"
    (tmp_path / "flipped.json").write_text(json.dumps(flipped))
    r2 = score_against_truth(tmp_path / "flipped.json", test_truth_path)
    assert r2.accuracy == pytest.approx(0.98)
    assert r2.macro_f1 == pytest.approx(plain_metrics(list(truth.values()), list(flipped.values()))[1])

    bad = dict(list(truth.items())[2:])
    bad["123"] = "yes"
    bad[list(bad)[0]] = "Yes!"
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(EvalDataError) as e:
        score_against_truth(tmp_path / "bad.json", test_truth_path)
    msg = str(e.value)
    assert "2 PMIDs of the ground truth have no prediction" in msg and "1 predicted PMIDs are not" in msg
    assert "'Yes!' is not one of yes, no, maybe" in msg

    assert cli(["score", str(all_yes), "--truth", str(test_truth_path)]) == 0
    assert cli(["score", str(tmp_path / "bad.json"), "--truth", str(test_truth_path)]) == 1


def test_compare_gives_the_majority_row_on_the_full_test_split(tmp_path, pqal_path):
    full = prepare_pubmedqa(tmp_path / "full", source=pqal_path)
    df = compare({}, full.test)
    assert list(df["model"]) == ["majority class (always yes)"]
    row = df.iloc[0]
    assert row["n"] == 500 and row["accuracy"] == pytest.approx(0.552)
    assert row["macro_f1"] == pytest.approx(0.2371, abs=1e-4) and row["collapsed"] == "yes"


def test_bad_evaluation_data_lists_every_problem(tmp_path):
    path = tmp_path / "bad.csv"
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["pmid", "prompt", "answer", "final_decision"])
        w.writerow(["1", "Q1?", "yes. fine", "yes"])
        w.writerow(["2", "Q2?", "perhaps", "perhaps"])
        w.writerow(["3", "", "no. x", "no"])
        w.writerow(["1", "Q4?", "maybe. y", "maybe"])
        w.writerow(["5", "Q5?", "No. read from the answer", ""])
        w.writerow(["6", "Q6?", "unclear", ""])
    with pytest.raises(EvalDataError) as e:
        read_eval_data(path)
    msg = str(e.value)
    assert "4 problem(s)" in msg
    assert "row 2: final_decision 'perhaps' is not one of yes, no, maybe" in msg
    assert "line 4, row 3: empty 'prompt'" in msg and "row 4: pmid 1 repeats row 1" in msg
    assert "row 6: no gold label" in msg
    good = tmp_path / "good.csv"
    good.write_text("prompt,answer\nQ?,No. read from the answer\nR?,maybe\n")
    rows = read_eval_data(good)
    assert [(r.id, r.gold) for r in rows] == [("1", "no"), ("2", "maybe")]


# ------------------------------------------------------------------------------- jobs, exports, generation


def _tiny_job(tmp_path, tiny_model_dir, pqa, name, lora=True):
    from ftkit.train.engine import train

    spec = {
        "name": name,
        "base_model_id": str(tiny_model_dir),
        "dataset": {"id": str(pqa.out), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "batch_size": 4,
            "learning_rate": 1e-2,
            "lora": {"enabled": lora, "r": 4, "alpha": 8},
        },
        "local": {"max_steps": 1, "output_dir": str(tmp_path / "runs"), "seed": 1},
    }
    return train(spec, quiet=True)


def test_job_refs_load_the_trained_weights(tmp_path, tiny_model_dir, pqa):
    from peft import PeftModel

    from ftkit.models.loading import load_model
    from ftkit.results.inference import contexts

    job = _tiny_job(tmp_path, tiny_model_dir, pqa, "tiny-lora")
    assert job.status == "completed" and job.record["result"]["lora"] is True
    tuned = evaluate(job.path, pqa.test, tmp_path / "p.json", limit=3, device="cpu")
    base = evaluate(str(tiny_model_dir), pqa.test, None, limit=3, device="cpu")
    assert list(json.loads((tmp_path / "p.json").read_text())) == [r["pmid"] for r in csv_rows(pqa.test)[:3]]
    diff = max(
        abs(a["logprobs"][c] - b["logprobs"][c]) for a, b in zip(tuned.rows, base.rows, strict=True) for c in LABELS
    )
    assert diff > 1e-4  # the adapter changed the model
    # merged weights give what base + unmerged adapter gives
    m, tok, _ = load_model(str(tiny_model_dir))
    peft_model = PeftModel.from_pretrained(m, job.model_dir).eval()
    prompts = [r["prompt"] for r in csv_rows(pqa.test)[:3]]
    ref = next_token_logprobs(peft_model, tok, contexts(tok, prompts), list(label_token_ids(tok).values()))
    for row, lp in zip(tuned.rows, ref, strict=True):
        assert [row["logprobs"][c] for c in LABELS] == pytest.approx(lp, abs=1e-4)
    # by id in a jobs folder, and through the CLI
    by_id = evaluate("tiny-lora", pqa.test, None, limit=3, jobs_dir=tmp_path / "runs", device="cpu")
    assert by_id.predictions == tuned.predictions
    assert (
        cli(
            [
                "evaluate",
                "tiny-lora",
                "--jobs-dir",
                str(tmp_path / "runs"),
                "--data",
                str(pqa.test),
                "--out",
                str(tmp_path / "cli.json"),
                "--limit",
                "2",
                "--quiet",
            ]
        )
        == 0
    )
    assert len(json.loads((tmp_path / "cli.json").read_text())) == 2

    full = _tiny_job(tmp_path, tiny_model_dir, pqa, "tiny-full", lora=False)
    assert full.record["result"]["lora"] is False
    r_full = evaluate(full.path, pqa.test, None, limit=3, device="cpu")
    assert (
        max(abs(a["logprobs"]["yes"] - b["logprobs"]["yes"]) for a, b in zip(r_full.rows, base.rows, strict=True))
        > 1e-4
    )

    df = compare(
        {"base": str(tiny_model_dir), "tuned": job.path},
        pqa.test,
        limit=3,
        device="cpu",
        out_dir=tmp_path / "cmp",
    )
    assert list(df["model"]) == ["majority class (always yes)", "base", "tuned"]
    assert {"accuracy", "macro_f1", "f1_maybe", "share_no", "collapsed", "seconds"} <= set(df.columns)
    assert df.loc[2, "accuracy"] == pytest.approx(tuned.accuracy)
    assert (tmp_path / "cmp" / "tuned.predictions.json").is_file()
    assert df.attrs["results"]["tuned"].predictions == tuned.predictions


def test_exported_archive_ref(tmp_path, tiny_model_dir, pqa):
    export = pytest.importorskip("ftkit.export.stage")
    job = _tiny_job(tmp_path, tiny_model_dir, pqa, "tiny-export")
    archive = export.export_job(job, out=tmp_path / "tiny.tar.gz", quiet=True)
    from_job = evaluate(job.path, pqa.test, None, limit=2, device="cpu")
    from_archive = evaluate(archive, pqa.test, None, limit=2, device="cpu")
    for a, b in zip(from_job.rows, from_archive.rows, strict=True):
        assert [a["logprobs"][c] for c in LABELS] == pytest.approx([b["logprobs"][c] for c in LABELS], abs=1e-4)
    with pytest.raises(ModelRefError, match="does not exist"):
        load_for_inference(tmp_path / "missing.tar.gz")


def test_generate_method_counts_unparsed_answers(tmp_path, tiny_model_dir, pqa):
    r = evaluate(
        str(tiny_model_dir),
        pqa.test,
        tmp_path / "g.json",
        method="generate",
        limit=4,
        max_new_tokens=4,
        device="cpu",
    )
    texts = [row["text"] for row in r.rows]
    expected = [(m.group(1).lower() if (m := re.search(r"\b(yes|no|maybe)\b", t, re.I)) else "unparsed") for t in texts]
    assert list(json.loads((tmp_path / "g.json").read_text()).values()) == expected
    assert r.unparsed == expected.count("unparsed")
    assert sum(r.shares.values()) == pytest.approx(1.0)
    if r.unparsed:
        assert f"WARNING: {r.unparsed} of 4 generated answers have no yes/no/maybe word" in str(r)
        assert "unparsed" in r.confusion["yes"]


def test_sample_answers_and_generate_cli(tiny_model_dir, pqa, capsys):
    df = sample_answers(str(tiny_model_dir), pqa.test, n=3, max_new_tokens=4, device="cpu")
    assert list(df.columns) == ["pmid", "question", "gold", "answer", "parsed"]
    assert list(df["gold"]) == ["yes", "no", "maybe"]
    rows = {r["pmid"]: r for r in csv_rows(pqa.test)}
    for pmid, q in zip(df["pmid"], df["question"], strict=True):
        assert rows[pmid]["prompt"].startswith("Question: " + q.rstrip("…"))

    assert (
        cli(
            [
                "generate",
                str(tiny_model_dir),
                "Is water wet?",
                "Is fire hot?",
                "--max-new-tokens",
                "3",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "> Is water wet?" in out and "> Is fire hot?" in out


def test_cli_errors_name_the_problem(tmp_path, pqa, capsys):
    assert cli(["evaluate", "no-such-model-xyz", "--data", str(pqa.test), "--out", str(tmp_path / "p.json")]) == 1
    assert "not a job folder, an export archive" in capsys.readouterr().err
    bad = tmp_path / "bad.csv"
    bad.write_text("pmid,prompt,final_decision\n1,Q?,perhaps\n")
    assert cli(["evaluate", "bundled", "--data", str(bad), "--out", str(tmp_path / "p.json")]) == 1
    err = capsys.readouterr().err
    assert "line 2, row 1: final_decision 'perhaps' is not one of yes, no, maybe" in err
    assert not (tmp_path / "p.json").exists()


def test_package_exports_stay_callable_after_module_import():
    import ftkit.results.evaluation  # noqa: F401  (modules of the same name as the functions once shadowed them)
    import ftkit.results.generation  # noqa: F401

    assert callable(ftkit.evaluate) and callable(ftkit.generate)
    assert ftkit.EvalResult is EvalResult


# ------------------------------------------------------------------------- other label sets and free text


def test_auc_is_reported_beside_accuracy(bundled_result):
    gold = [r["gold"] for r in bundled_result.rows]
    margins = [r["logprobs"]["yes"] - r["logprobs"]["no"] for r in bundled_result.rows]
    pos = [m for m, g in zip(margins, gold, strict=True) if g == "yes"]
    neg = [m for m, g in zip(margins, gold, strict=True) if g == "no"]
    pairs = [(p > n) + 0.5 * (p == n) for p in pos for n in neg]
    assert bundled_result.auc == pytest.approx(sum(pairs) / len(pairs))
    assert f"AUC yes-vs-no {bundled_result.auc:.3f}" in str(bundled_result)


def test_own_labels_and_columns_from_the_command_line(tmp_path, tiny_model_dir, capsys):
    data = tmp_path / "reviews.csv"
    data.write_text("text,sentiment\nA great film.,pos\nAn awful film.,neg\nLoved it.,POS\n")
    out = tmp_path / "pred.json"
    args = ["evaluate", str(tiny_model_dir), "--data", str(data), "--out", str(out), "--quiet"]
    assert cli([*args, "--labels", "pos,neg", "--prompt-column", "text", "--label-column", "sentiment"]) == 0
    assert json.loads(out.read_text()).keys() == {"1", "2", "3"}
    metrics = json.loads(out.with_name("pred.metrics.json").read_text())
    assert metrics["labels"] == ["pos", "neg"] and metrics["per_class"]["pos"]["support"] == 2
    assert "AUC pos-vs-neg" in capsys.readouterr().out


def test_free_text_answers_get_answer_loss_and_exact_match(tmp_path, tiny_model_dir, bundled_loaded):
    data = tmp_path / "qa.csv"
    data.write_text("prompt,answer\nWhat is 2+2?,4\nName a colour.,blue\n")
    out = tmp_path / "answers.json"
    result = evaluate(bundled_loaded, data, out)
    assert result.method == "free-text" and result.n == 2 and 0 <= result.exact_match <= 1
    assert result.answer_tokens >= 4  # each answer's tokens plus its EOS
    assert result.perplexity == pytest.approx(math.exp(result.answer_loss))
    answers = json.loads(out.read_text())
    assert set(answers) == {"1", "2"} and all(isinstance(a, str) for a in answers.values())
    assert json.loads(out.with_name("answers.metrics.json").read_text())["answer_loss"] == pytest.approx(
        result.answer_loss
    )
    with pytest.raises(EvalDataError, match="no gold label"):  # asking for labels means every row needs one
        evaluate(bundled_loaded, data, None, labels=("yes", "no"))
