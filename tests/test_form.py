"""The job form, headless: widgets set from code, observers revalidate, buttons clicked; and the token
colouring, checked against the chat template rendered independently."""

from __future__ import annotations

import json
import re
from html import unescape
from pathlib import Path

import pytest
from IPython.display import display
from transformers import AutoTokenizer

from ftkit import JobForm, load_job, render_trained_tokens
from ftkit.job.spec import JobSpecError
from ftkit.models.catalog import CATALOG_BATCH_SIZES


def write_csv(path: Path, header: str, n: int = 12) -> Path:
    cols = header.split(",")
    rows = [",".join(f"{c} {i}" for c in cols) for i in range(n)]
    path.write_text("\n".join([header, *rows]) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def data(tmp_path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    write_csv(folder / "train.csv", "question,reply,source")
    write_csv(folder / "validation.csv", "question,reply,source", n=3)
    return folder


def test_columns_come_from_the_csv_header_and_errors_follow_the_values(tmp_path, data):
    form = JobForm(base_dir=tmp_path)
    assert "dataset.id" in form.message_for("dataset.id")  # empty until a file is named
    form.widgets["dataset.id"].value = "data"  # relative to base_dir; a folder holding train.csv
    prompt, answer = form.widgets["dataset.prompt_column"], form.widgets["dataset.answer_column"]
    assert [v for _, v in prompt.options] == ["", "question", "reply", "source"]  # "" = no prompt column
    assert list(answer.options) == ["question", "reply", "source"]
    # no column is called "answer": nothing is guessed, the form says the field is required
    assert answer.value is None and "dataset.answer_column: is required" in form.message_for("dataset.answer_column")
    with pytest.raises(JobSpecError, match="answer_column"):
        form.spec  # noqa: B018

    answer.value, prompt.value = "reply", "question"
    assert form.errors == [] and "valid job" in form.messages.value
    spec = form.spec
    assert (spec.dataset.prompt_column, spec.dataset.answer_column) == ("question", "reply")
    assert spec.dataset_files().validation == (data / "validation.csv").resolve()


def test_out_of_range_values_show_an_error_beside_the_field(tmp_path, data):
    form = JobForm(
        {
            "name": "j",
            "base_model_id": "bundled",
            "dataset": {"id": str(data), "prompt_column": "question", "answer_column": "reply"},
        }
    )
    assert form.errors == []
    form.widgets["hyperparameters.weight_decay"].value = -0.1
    form.widgets["hyperparameters.lora.dropout"].value = 1.0
    form.widgets["local.max_seq_length"].value = 9000  # the bundled model's context is 8192
    assert "hyperparameters.weight_decay: is too small" in form.message_for("hyperparameters.weight_decay")
    assert "allowed: >= 0" in form.message_for("hyperparameters.weight_decay")
    assert "dropout 1.0 zeroes the LoRA branch" in form.message_for("hyperparameters.lora.dropout")
    assert "context length 8192" in form.message_for("local.max_seq_length")
    assert {p.path for p in form.errors} == {
        "hyperparameters.weight_decay",
        "hyperparameters.lora.dropout",
        "local.max_seq_length",
    }
    assert form.message_for("hyperparameters.n_epochs") == ""
    text = unescape(re.sub(r"<[^>]+>", " ", form.messages.value))
    assert "3 problem(s)" in text and "hyperparameters.weight_decay" in text
    with pytest.raises(JobSpecError) as e:
        form.spec  # noqa: B018
    assert len(e.value.errors) == 3

    form.widgets["hyperparameters.weight_decay"].value = 0.01
    form.widgets["hyperparameters.lora.dropout"].value = 0.05
    form.widgets["local.max_seq_length"].value = 0  # 0 = auto
    assert form.errors == [] and form.message_for("hyperparameters.weight_decay") == ""
    assert form.spec.local.max_seq_length is None and form.spec.hyperparameters.lora.dropout == 0.05


def test_save_writes_the_body_the_form_shows(tmp_path, data):
    form = JobForm(save_path=str(tmp_path / "out" / "job.json"))
    w = form.widgets
    w["name"].value = "pubmed-lora"
    w["dataset.id"].value = str(data / "train.csv")
    w["local.validation_file"].value = str(data / "validation.csv")
    w["dataset.prompt_column"].value = "question"
    w["dataset.answer_column"].value = "reply"
    w["hyperparameters.n_epochs"].value = 3
    w["hyperparameters.n_evals"].value = 2
    w["hyperparameters.batch_size"].value = 8
    w["local.micro_batch_size"].value = 2
    w["hyperparameters.learning_rate"].value = 2e-4
    w["hyperparameters.mask_prompt_labels"].value = True
    w["hyperparameters.lora.r"].value = 16
    form.modules["q_proj"].value = True
    form.modules["v_proj"].value = True
    w["local.seed"].value = 7
    assert form.errors == []
    (tmp_path / "out").mkdir()
    form.save_button.click()
    assert "saved to" in form.save_status.value
    saved = json.loads((tmp_path / "out" / "job.json").read_text())
    assert saved == {
        "name": "pubmed-lora",
        "base_model_id": "bundled",
        "dataset": {"id": str(data / "train.csv"), "prompt_column": "question", "answer_column": "reply"},
        "hyperparameters": {
            "n_epochs": 3,
            "n_evals": 2,
            "batch_size": 8,
            "learning_rate": 2e-4,
            "warmup_ratio": 0.0,
            "weight_decay": 0.0,
            "best_checkpoints": False,
            "mask_prompt_labels": True,
            "lora": {
                "enabled": True,
                "r": 16,
                "alpha": 8,
                "dropout": 0.0,
                "trainable_modules": ["q_proj", "v_proj"],
            },
        },
        "local": {"seed": 7, "micro_batch_size": 2, "validation_file": str(data / "validation.csv")},
    }
    assert load_job(tmp_path / "out" / "job.json").normalized() == form.spec.normalized()

    w["hyperparameters.weight_decay"].value = -1.0
    form.save_button.click()
    assert "not saved" in form.save_status.value and "weight_decay" in form.save_status.value


def test_a_spec_prefills_the_form_and_round_trips(tmp_path, data):
    job = tmp_path / "job.yaml"
    job.write_text(
        "name: llama-run\n"
        "base_model_id: Meta-Llama-3-8B-Instruct\n"  # a catalog name: kept as written, not made the UUID
        "dataset: {id: data, prompt_column: question, answer_column: reply}\n"
        "hyperparameters:\n"
        "  n_epochs: 4\n  evaluation_epochs: 2\n  batch_size: 12\n  learning_rate: 0.0003\n"
        "  best_checkpoints: true\n"
        "  lora: {r: 32, alpha: 16, dropout: 0.1, trainable_modules: [k_proj, down_proj]}\n"
        "local: {micro_batch_size: 4, precision: fp32, max_steps: 50, output_dir: elsewhere,\n"
        "        label_marker: 'Answer:', best_metric: eval_macro_f1, class_weights: balanced}\n"
    )
    with pytest.warns(UserWarning):
        spec = load_job(job)
    form = JobForm(spec)
    w = form.widgets
    assert w["base_model_id"].value == "Meta-Llama-3-8B-Instruct"
    assert tuple(w["hyperparameters.batch_size"].options) == CATALOG_BATCH_SIZES
    assert w["hyperparameters.n_evals"].value == 2  # evaluation_epochs=2 over 4 epochs, shown as n_evals
    assert w["local.micro_batch_size"].value == 4 and w["local.max_steps"].value == 50
    assert w["local.label_marker"].value == "Answer:"  # the cookbook's job: a text box (was a float box: TraitError)
    assert [m for m, box in form.modules.items() if box.value] == ["k_proj", "down_proj"]
    assert form.errors == []
    assert form.spec.normalized() == spec.normalized()
    assert form.spec.base_dir == spec.base_dir == tmp_path


def test_changing_the_model_offers_its_batch_sizes(tmp_path, data, tiny_model_dir):
    form = JobForm(
        {
            "name": "j",
            "base_model_id": "bundled",
            "hyperparameters": {"batch_size": 6},
            "dataset": {"id": str(data), "prompt_column": "question", "answer_column": "reply"},
            "local": {"micro_batch_size": 3},
        }
    )
    bs, micro = form.widgets["hyperparameters.batch_size"], form.widgets["local.micro_batch_size"]
    assert bs.value == 6 and micro.value == 3 and [v for _, v in micro.options] == [0, 1, 2, 3, 6]  # 0 = auto
    form.widgets["base_model_id"].value = "a1b2c3d4-e5f6-7890-abcd-ef1234567890"  # Qwen2-1.5B-Instruct
    assert tuple(bs.options) == CATALOG_BATCH_SIZES and bs.value == 4  # nearest offered size
    assert [v for _, v in micro.options] == [0, 1, 2, 4] and micro.value == 0  # 3 no longer divides: auto
    assert form.errors == []
    form.widgets["model_other"].value = str(tiny_model_dir)  # a local folder overrides the list
    assert form.spec.base_model_id == str(tiny_model_dir) and len(bs.options) == 64

    form.widgets["hyperparameters.lora.enabled"].value = False
    assert form.widgets["hyperparameters.lora.r"].disabled and form.modules["q_proj"].disabled


def test_estimate_and_preview_panels(tmp_path, data, tiny_model_dir):
    form = JobForm(
        {
            "name": "tiny",
            "base_model_id": str(tiny_model_dir),
            "dataset": {"id": str(data), "prompt_column": "question", "answer_column": "reply"},
        }
    )
    form.estimate_measure.value = False
    form.estimate_button.click()
    form.wait_estimate(120)
    assert form.last_estimate is not None and form.last_estimate.schedule.train_rows == 12
    assert "Estimate for job tiny" in form.estimate_html.value and "priced tokens" in form.estimate_html.value

    form.preview_button.click()
    assert form.preview_html.value.count("ftkit-tok masked") == 1  # only the first token, without masking
    form.widgets["hyperparameters.mask_prompt_labels"].value = True  # the preview follows
    shown = unescape(re.sub(r"<[^>]+>", "", form.preview_html.value))
    assert form.preview_html.value.count("ftkit-tok masked") > 10 and "question 0" in shown


def test_the_form_displays_headless(tmp_path):
    form = JobForm(base_dir=tmp_path)
    bundle = form._repr_mimebundle_()
    assert "application/vnd.jupyter.widget-view+json" in bundle
    display(form)  # no frontend, no kernel: must not raise
    accordion = next(c for c in form.widget.children if type(c).__name__ == "Accordion")
    assert accordion.selected_index is None  # the local settings start collapsed
    assert "None checked = all linear layers" in str(form.widget.children)
    assert "Peak learning rate of the linear schedule." in str(form.widget.children)  # help under its field


def test_readers_without_widgets_see_a_table_of_the_job_with_relative_paths(tmp_path, data):
    body = {"name": "j", "base_model_id": "bundled", "dataset": {"id": str(data), "answer_column": "reply"}}
    form = JobForm(body, base_dir=tmp_path, save_path=tmp_path / "job.json")
    assert form.widgets["dataset.id"].value == "data" and form.save_path.value == "job.json"  # shown relative
    bundle = form._repr_mimebundle_()
    assert bundle["text/plain"] == "JobForm(job 'j', valid): run the notebook to edit it"
    table = unescape(re.sub(r"<[^>]+>", " ", bundle["text/html"]))
    assert "hyperparameters.learning_rate" in table and "dataset.id   data" in table
    assert str(tmp_path) not in bundle["text/html"]
    form.widgets["hyperparameters.weight_decay"].value = -1.0
    assert "weight_decay: is too small" in form._repr_mimebundle_()["text/html"]


def test_the_estimate_runs_beside_the_kernel_and_stops_when_asked(tmp_path, data, tiny_model_dir):
    body = {"name": "t", "base_model_id": str(tiny_model_dir), "dataset": {"id": str(data), "answer_column": "reply"}}
    form = JobForm(body, estimate_steps=2)
    assert form.estimate_steps.value == 2
    form.estimate_button.click()
    assert form.estimate_button.disabled and form.estimate_running.layout.display == "flex"  # progress and Stop
    form.stop_button.click()
    form.wait_estimate(120)
    assert "Estimate cancelled" in form.estimate_html.value and form.last_estimate is None
    assert not form.estimate_button.disabled and form.estimate_running.layout.display == "none"

    seen = []
    form._progress = lambda stage, done, total: seen.append((stage, done, total))  # what the bar is told
    form.estimate_button.click()
    form.wait_estimate(300)
    assert form.last_estimate.timing.measured_steps == 2 and "Estimate for job t" in form.estimate_html.value
    stages = [stage for stage, _, _ in seen]
    assert stages[:3] == ["counting tokens", "memory", "loading the model"] and stages[-1] == "done"
    assert "timed step 3 of 3" in stages and [d for _, d, _ in seen] == sorted(d for _, d, _ in seen)


def test_save_or_keep_job_keeps_what_the_form_saved(tmp_path, data, capsys):
    from ftkit.cookbook import save_or_keep_job

    body = {"name": "params", "base_model_id": "bundled", "dataset": {"id": str(data), "answer_column": "reply"}}
    spec, job_file = load_job(body), tmp_path / "run" / "job.json"
    job_file.parent.mkdir()
    form = JobForm(spec, save_path=job_file)
    save_or_keep_job(spec, job_file, form)  # nothing saved by the form yet: the parameters' job
    assert json.loads(job_file.read_text())["name"] == "params" and "parameters' job" in capsys.readouterr().out
    form.widgets["name"].value = "edited"
    form.widgets["hyperparameters.learning_rate"].value = 0.00012345
    form.save_button.click()
    assert f"saved to <code>{job_file.resolve()}</code>" in form.save_status.value
    kept = save_or_keep_job(spec, job_file, form)
    assert (kept.name, kept.hyperparameters.learning_rate) == ("edited", 0.00012345)
    assert json.loads(job_file.read_text())["hyperparameters"]["learning_rate"] == 0.00012345
    assert "kept the job saved by the form" in capsys.readouterr().out
    save_or_keep_job(spec, job_file, None)  # papermill: no form, the parameters win
    assert json.loads(job_file.read_text())["name"] == "params"


def test_the_preview_cuts_a_long_row_as_the_job_does(bundled_model_dir):
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    prompt, answer = "Question: is this long? " + "Context sentence. " * 60, "yes. It is long."
    html = render_trained_tokens(tok, prompt, answer, mask_prompt=True, max_seq_length=64)
    spans = _spans(html)
    trained = "".join(t for c, t in spans if c.startswith("trained"))
    assert trained == answer + tok.eos_token  # the answer stays whole, the prompt is shortened
    assert "64 tokens" in unescape(html) and "to max_seq_length=64 as the job cuts it" in unescape(html)
    assert "cut from" not in render_trained_tokens(tok, "short?", answer, mask_prompt=True, max_seq_length=64)


def _spans(html: str) -> list[tuple[str, str]]:
    return [
        (cls, unescape(text).replace("\u21b5", ""))
        for cls, text in re.findall(r'<span class="ftkit-tok ([a-z ]+)"[^>]*>(.*?)</span>', html, flags=re.S)
    ]


@pytest.mark.parametrize("mask", [True, False])
def test_token_colouring_marks_what_training_learns(bundled_model_dir, mask):
    tok = AutoTokenizer.from_pretrained(bundled_model_dir)
    prompt, answer = "Is aspirin an NSAID?\n\nAnswer yes, no or maybe.", "yes. Aspirin is an NSAID (ü, 日本)."
    html = render_trained_tokens(tok, prompt, answer, mask_prompt=mask)
    spans = _spans(html)
    user = [{"role": "user", "content": prompt}]
    head = tok.apply_chat_template(user, tokenize=False, add_generation_prompt=True)
    assert "".join(t for _, t in spans) == head + answer + tok.eos_token  # every character, in order
    trained = "".join(t for c, t in spans if c.startswith("trained"))
    masked = "".join(t for c, t in spans if c.startswith("masked"))
    if mask:
        assert masked == head and trained == answer + tok.eos_token
    else:
        assert masked == spans[0][1] == "<|im_start|>"  # the first token is never a prediction target
    assert spans[-1] == ("trained eos", tok.eos_token)
    assert "is trained" in html and f"mask_prompt_labels={'true' if mask else 'false'}" in html
