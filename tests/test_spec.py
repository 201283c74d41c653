"""The job specification: the docs' body, defaults and ranges (read from the docs at test time), every error
at once, aliases, cross-field checks, dataset files, the demo client's YAML layout and `ftkit check-job`."""

from __future__ import annotations

import copy
import json
import re
import warnings

import pytest
from pydantic import ValidationError

from ftkit.cli import main
from ftkit.job.save import fields_table, save_job
from ftkit.job.spec import JobSpec, JobSpecError, JobSpecWarning, load_job
from ftkit.paths import shared_dir

LLAMA_31_INSTRUCT = "5b912da4-4a68-43eb-9224-38239535d934"
CATALOG_IDS = [
    "e5f6a7b8-c9d0-1234-efab-567890123456",
    "d4e5f6a7-b8c9-0123-defa-456789012345",
    "28475dc6-e4be-49a4-8a87-660c4a7bb0ff",
    LLAMA_31_INSTRUCT,
    "f6a7b8c9-d0e1-2345-fabc-678901234567",
    "a7b8c9d0-e1f2-3456-abcd-789012345678",
    "b1432ae3-b4ce-4e12-be53-ab0555d00f93",
    "c3d4e5f6-a7b8-9012-cdef-345678901234",
    "a1b2c3d4-e5f6-7890-abcd-ef1234567890",
    "b2c3d4e5-f6a7-8901-bcde-f23456789012",
]

# config.yaml of the service's public demo client (github.com/nscaledev/demo-nscale), verbatim.
DEMO_YAML = """\
# Nscale Fine-tuning Configuration

# Model settings
model:
  # Meta-Llama-3.1-8B-Instruct (matches cookbook example)
  base_model: "5b912da4-4a68-43eb-9224-38239535d934"

# Training hyperparameters
# Values match the PubMedQA cookbook example
training:
  batch_size: 32
  learning_rate: 0.00001
  num_epochs: 3
  num_evaluations: 6
  weight_decay: 0.03
  warmup_ratio: 0
  mask_prompt_labels: false
  best_checkpoints: false

# LoRA configuration
# Values match the PubMedQA cookbook example
lora:
  enabled: true
  alpha: 16
  r: 8
  dropout: 0
  trainable_modules: []

# Dataset configuration
dataset:
  prompt_column: "question"
  answer_column: "answer"
  train_file: "data/train.csv"
  validation_file: "data/validation.csv"

# API settings
api:
  fine_tuning_base_url: "https://fine-tuning.api.nscale.com/api/v1"
  inference_base_url: "https://inference.api.nscale.com/v1"
  timeout: 300
"""


@pytest.fixture(scope="module")
def docs_text() -> str:
    shared = shared_dir()
    path = shared / "reference" / "nscale-fine-tuning-docs.txt" if shared else None
    if path is None or not path.is_file():
        pytest.fail(f"the service docs are expected at {path} (CI lays ../shared beside the clone)")
    return path.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def docs_body(docs_text) -> dict:
    """The job body of the docs' `curl -X POST .../jobs` example."""
    bodies = [json.loads(b) for b in re.findall(r"-d '(\{.*?\})'", docs_text, re.S) if '"base_model_id"' in b]
    assert len(bodies) == 1
    return bodies[0]


@pytest.fixture(scope="module")
def docs_fields(docs_text) -> dict:
    """field -> {default, min, max} as the docs' hyperparameter bullets state them."""
    out = {}
    for name, kind, text in re.findall(r"•\s*(\w+) \((integer|float|boolean), optional\):(.*)", docs_text):
        entry = {"kind": kind}
        for key, pattern in (
            ("default", r"Default:?\s*([\w.]+)"),
            ("min", r"Min:\s*([\d.]+)"),
            ("max", r"Max:\s*([\d.]+?)\.?(?:\s|$)"),
        ):
            m = re.search(pattern, text)
            if m:
                entry[key] = m.group(1).rstrip(".")
        out[name] = entry
    return out


def _value(kind: str, text: str):
    return {"integer": int, "float": float, "boolean": lambda t: t == "true"}[kind](text)


def _path(field: str) -> str:
    return (
        f"hyperparameters.lora.{field}" if field in ("enabled", "r", "alpha", "dropout") else f"hyperparameters.{field}"
    )


def _minimal(**hyper) -> dict:
    body = {
        "name": "job",
        "base_model_id": "bundled",
        "dataset": {"id": "data.csv", "answer_column": "answer"},
    }
    if hyper:
        body["hyperparameters"] = hyper
    return body


def _load(body, **kw) -> JobSpec:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", JobSpecWarning)
        return load_job(body, **kw)


def _warned(body, pattern: str) -> JobSpec:
    """Load, asserting that one of the notes warned about matches ``pattern``."""
    with pytest.warns(JobSpecWarning) as record:
        spec = load_job(body)
    assert any(re.search(pattern, str(w.message)) for w in record), [str(w.message) for w in record]
    return spec


def _errors(body, **kw) -> dict[str, str]:
    with pytest.raises(JobSpecError) as err:
        _load(body, **kw)
    return {p.path: str(p) for p in err.value.errors}


# --- the docs' example body ---


@pytest.mark.parametrize("model_id", CATALOG_IDS)
def test_docs_example_body_validates_and_round_trips(docs_body, model_id):
    body = dict(docs_body, base_model_id=model_id)
    original = copy.deepcopy(body)
    with pytest.warns(JobSpecWarning) as record:
        spec = load_job(body)
    assert spec.to_service_dict() == original and spec.dump() == original
    assert "local" not in spec.dump()
    assert body == original  # the caller's dict is left alone
    assert spec.hyperparameters.n_evals == 1  # evaluation_epochs=1 with n_epochs=1
    assert spec.hyperparameters.warmup_ratio == 0
    messages = [str(w.message) for w in record]
    assert any("evaluation_epochs" in m and "n_evals" in m for m in messages)
    assert any("warmup_epochs" in m and "warmup_ratio" in m for m in messages)
    assert spec.notes == messages


def test_docs_example_placeholder_model_is_the_only_problem(docs_body):
    errors = _errors(docs_body)
    assert list(errors) == ["base_model_id"]
    assert "<Base_Model_ID>" in errors["base_model_id"] and "ftkit models" in errors["base_model_id"]


def test_defaults_are_the_docs_defaults(docs_fields):
    spec = _load(_minimal())
    hp = spec.normalized()["hyperparameters"]
    checked = 0
    for name, entry in docs_fields.items():
        if "default" not in entry:
            continue
        actual = hp["lora"][name] if _path(name).startswith("hyperparameters.lora") else hp[name]
        assert actual == _value(entry["kind"], entry["default"]), name
        checked += 1
    assert checked == 12  # every documented default with a value
    assert hp["lora"]["trainable_modules"] == []  # docs: all-linear
    assert spec.dataset.prompt_column is None
    assert spec.dump() == _minimal()
    local = spec.normalized()["local"]
    assert local == {
        "seed": 42,
        "max_seq_length": None,
        "micro_batch_size": None,
        "precision": "auto",
        "batching": "auto",
        "logging_steps": 1,
        "output_dir": "runs",
        "device": "auto",
        "distributed": "ddp",
        "quantization": "none",
        "validation_file": None,
        "trust_remote_code": False,
        "max_steps": None,
        "max_train_rows": None,
        "torch_compile": False,
        "save_steps": None,
        "trainable_layers": None,
        "labels": None,
        "label_column": None,
        "label_marker": None,
        "class_weights": "none",
        "best_metric": "eval_loss",
        "report_to": [],
    }
    assert "local" not in spec.to_service_dict() and "evaluation_epochs" not in json.dumps(spec.normalized())


def test_documented_ranges_are_enforced(docs_fields):
    ranged = {n: e for n, e in docs_fields.items() if "min" in e}
    assert set(ranged) == {
        "n_epochs",
        "n_evals",
        "learning_rate",
        "warmup_ratio",
        "weight_decay",
        "r",
        "alpha",
        "dropout",
    }
    for name, entry in ranged.items():
        lo = _value(entry["kind"], entry["min"])
        below = lo - 1 if entry["kind"] == "integer" else (lo / 10 if lo > 0 else -0.1)
        cases = [(lo, True), (below, False)]
        if "max" in entry:
            hi = _value(entry["kind"], entry["max"])
            above = hi + 1 if entry["kind"] == "integer" else hi * 10
            cases += [(above, False), (hi, name != "dropout")]  # dropout 1.0 would zero the LoRA branch
        for value, ok in cases:
            hyper = {"lora": {name: value}} if name in ("r", "alpha", "dropout") else {name: value}
            if ok:
                _load(_minimal(**hyper))
            else:
                errors = _errors(_minimal(**hyper))
                assert list(errors) == [_path(name)], (name, value, errors)
                allowed = errors[_path(name)].split("allowed: ")[1]
                assert allowed.startswith((f"{lo:g}..", f"{lo:g} <=", f">= {lo:g}")), (name, allowed)


def test_out_of_range_message_names_field_value_and_range():
    errors = _errors(_minimal(lora={"r": 100}))
    assert errors == {"hyperparameters.lora.r": "hyperparameters.lora.r: is too large (got 100; allowed: 1..64)"}
    errors = _errors(_minimal(lora={"dropout": 1.0}))
    assert "zeroes the LoRA branch" in errors["hyperparameters.lora.dropout"]
    assert "0 <= dropout < 1" in errors["hyperparameters.lora.dropout"]


# --- unknown fields, types, all problems at once ---


@pytest.mark.parametrize(
    ("body_path", "suggestion"),
    [
        ("nme", "'name'"),
        ("hyperparameters.n_epoch", "'n_epochs'"),
        ("hyperparameters.lora.rank", "'r'"),
        ("hyperparameters.lora.target_modules", "'trainable_modules'"),
        ("epochs", "'hyperparameters.n_epochs'"),
        ("learning_rate", "'hyperparameters.learning_rate'"),
        ("dataset.answer", "'answer_column'"),
        ("local.precison", "'precision'"),
        ("hyperparameters.num_evaluations", "'n_evals'"),
    ],
)
def test_unknown_field_is_an_error_with_a_suggestion(body_path, suggestion):
    body = _minimal(lora={})
    node = body
    *parents, leaf = body_path.split(".")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = 3
    errors = _errors(body)
    assert list(errors) == [body_path]
    assert f"unknown field; did you mean {suggestion}?" in errors[body_path]


def test_type_errors_are_readable():
    errors = _errors(_minimal(n_epochs=True, n_evals="two", best_checkpoints="yes", lora="on"))
    assert "must be a number, not true/false" in errors["hyperparameters.n_epochs"]
    assert "must be a whole number" in errors["hyperparameters.n_evals"]
    assert "must be true or false" in errors["hyperparameters.best_checkpoints"]
    assert "must be an object" in errors["hyperparameters.lora"]
    assert not any("pydantic" in e or "Input should" in e for e in errors.values())


def test_all_problems_are_reported_at_once():
    body = {
        "name": "",
        "base_model_id": LLAMA_31_INSTRUCT,
        "dataset": {"id": "data.csv", "prompt_column": "q"},
        "hyperparameters": {
            "n_epochs": 0,
            "batch_size": 6,
            "learning_rate": 0.5,
            "warmup_ratio": 2,
            "lora": {"r": 0, "alpha": 65, "trainable_modules": ["q_proj", "qkv_proj"]},
            "n_epoch": 2,
        },
        "local": {"micro_batch_size": 4, "device": "tpu", "max_seq_length": 10000},
        "extra": 1,
    }
    with pytest.raises(JobSpecError) as err:
        _load(body)
    paths = [p.path for p in err.value.errors]
    assert sorted(paths) == sorted(
        [
            "name",
            "dataset.answer_column",
            "hyperparameters.n_epochs",
            "hyperparameters.batch_size",
            "hyperparameters.learning_rate",
            "hyperparameters.warmup_ratio",
            "hyperparameters.lora.r",
            "hyperparameters.lora.alpha",
            "hyperparameters.lora.trainable_modules[1]",
            "hyperparameters.n_epoch",
            "local.micro_batch_size",
            "local.device",
            "local.max_seq_length",
            "extra",
        ]
    )
    text = str(err.value)
    assert text.startswith("14 problems in the job specification:")
    assert (
        "hyperparameters.batch_size: is not a batch size Meta-Llama-3.1-8B-Instruct supports (got 6; "
        "allowed: one of 4,8,12,16,20,24,28,32)" in text
    )
    assert 'local.device: is not one of the allowed values (got "tpu"; allowed: one of auto, cuda, mps, cpu)' in text
    assert "local.micro_batch_size: does not divide batch_size 6" in text
    assert "context length 8192" in text


def test_top_level_must_be_a_mapping():
    with pytest.raises(JobSpecError, match="a job must be a mapping"):
        load_job("[1, 2]\n")


# --- cross-field checks ---


def test_batch_size_follows_the_model():
    assert _load(_minimal(batch_size=6)).hyperparameters.batch_size == 6  # bundled: 1..64
    errors = _errors(dict(_minimal(batch_size=6), base_model_id="Qwen2-1.5B-Instruct"))
    assert "allowed: one of 4,8,12,16,20,24,28,32" in errors["hyperparameters.batch_size"]
    assert _load(dict(_minimal(batch_size=32), base_model_id="Qwen/Qwen2-1.5B-Instruct"))


def test_unresolvable_model_is_an_error_on_base_model_id():
    errors = _errors(dict(_minimal(), base_model_id="Meta-Llama-3.1-8B-Instruc"))
    assert list(errors) == ["base_model_id"]
    assert "did you mean 'Meta-Llama-3.1-8B-Instruct'" in errors["base_model_id"]


def test_micro_batch_and_accumulation():
    spec = _load(dict(_minimal(batch_size=8), local={"micro_batch_size": 2}))
    assert (spec.micro_batch_size(), spec.gradient_accumulation_steps()) == (2, 4)
    errors = _errors(dict(_minimal(batch_size=8), local={"micro_batch_size": 3}))
    assert errors == {
        "local.micro_batch_size": "local.micro_batch_size: does not divide batch_size 8, so gradient "
        "accumulation cannot keep the effective batch (got 3; allowed: one of 1, 2, 4, 8)"
    }
    spec = _load(_minimal(batch_size=8))
    assert (spec.micro_batch_size(), spec.gradient_accumulation_steps()) == (8, 1)


def test_max_seq_length_against_context(tmp_path):
    model = tmp_path / "m"
    model.mkdir()
    (model / "config.json").write_text(json.dumps({"max_position_embeddings": 512}))
    body = dict(_minimal(), base_model_id=str(model))
    assert _load(body).max_seq_length() == 512
    assert _load(dict(_minimal(), base_model_id="bundled")).max_seq_length() == 2048
    assert (
        "longer than m's context length 512"
        in _errors(dict(body, local={"max_seq_length": 1024}))["local.max_seq_length"]
    )
    assert _load(dict(body, local={"max_seq_length": 256})).max_seq_length() == 256


def test_relative_model_folder_is_read_from_the_job_folder(tmp_path):
    (tmp_path / "models" / "m").mkdir(parents=True)
    (tmp_path / "models" / "m" / "config.json").write_text(json.dumps({"max_position_embeddings": 1024}))
    job = tmp_path / "job.json"
    job.write_text(json.dumps(dict(_minimal(), base_model_id="./models/m")))
    spec = _load(job)
    assert spec.resolved_model().kind == "local"
    assert spec.resolved_model().source == str((tmp_path / "models" / "m").resolve())


def test_other_cross_field_errors():
    errors = _errors(
        dict(
            _minimal(),
            dataset={"id": "d.csv", "prompt_column": "a", "answer_column": "a"},
            local={"device": "cpu", "precision": "fp16"},
        )
    )
    assert set(errors) == {"dataset.prompt_column", "local.precision"}
    assert "same column as answer_column" in errors["dataset.prompt_column"]
    assert "fp16 cannot train on CPU" in errors["local.precision"]


def test_notes_for_holdout_best_checkpoint_and_full_finetuning(tmp_path):
    spec = _load(_minimal(n_evals=2, best_checkpoints=True))
    assert any("1% of the training rows (at least 1) are held out" in n for n in spec.notes)
    spec = _load(_minimal(best_checkpoints=True, lora={"enabled": False, "r": 16}))
    assert any("with n_evals=0 the last checkpoint is kept" in n for n in spec.notes)
    assert any("full fine-tuning" in n and "lora.r unused" in n for n in spec.notes)
    # a validation file means nothing is held out
    (tmp_path / "train.csv").write_text("answer\nyes\n")
    (tmp_path / "validation.csv").write_text("answer\nno\n")
    spec = _load(dict(_minimal(n_evals=2), dataset={"id": str(tmp_path), "answer_column": "answer"}))
    assert not any("held out" in n for n in spec.notes)
    spec = _load(dict(_minimal(n_evals=2), local={"validation_file": "v.csv"}))
    assert not any("held out" in n for n in spec.notes)


def test_hub_model_needs_no_network_to_validate(monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", lambda *a, **k: pytest.fail("network used"))
    spec = _warned(dict(_minimal(batch_size=48), base_model_id="someorg/some-model"), "Hugging Face repo id")
    assert spec.resolved_model().kind == "hub"
    spec = _load(dict(_minimal(), base_model_id="meta-llama/Llama-3.1-8B-Instruk"))
    assert any("Did you mean the catalog model 'meta-llama/Llama-3.1-8B-Instruct'" in n for n in spec.notes)


def test_bundled_hub_id_note():
    spec = _load(dict(_minimal(), base_model_id="HuggingFaceTB/SmolLM2-135M-Instruct"))
    assert spec.resolved_model().kind == "bundled"
    assert any("served from ftkit's bundled copy" in n for n in spec.notes)


# --- undocumented aliases of the docs' example ---


def test_evaluation_epochs_alias():
    spec = _warned(_minimal(n_epochs=4, evaluation_epochs=2), r"n_evals = n_epochs // 2 = 2")
    assert spec.hyperparameters.n_evals == 2
    assert spec.dump()["hyperparameters"] == {"n_epochs": 4, "evaluation_epochs": 2}
    assert spec.normalized()["hyperparameters"]["n_evals"] == 2
    assert "evaluation_epochs" not in spec.normalized()["hyperparameters"]
    assert _load(_minimal(n_epochs=4, evaluation_epochs=2, n_evals=2)).hyperparameters.n_evals == 2  # agree
    errors = _errors(_minimal(n_epochs=4, evaluation_epochs=2, n_evals=3))
    assert list(errors) == ["hyperparameters.evaluation_epochs"]
    assert "but n_evals is 3" in errors["hyperparameters.evaluation_epochs"]
    spec = _load(_minimal(n_epochs=2, evaluation_epochs=3))
    assert spec.hyperparameters.n_evals == 0 and any("no evaluation will run" in n for n in spec.notes)


def test_warmup_epochs_alias():
    spec = _warned(_minimal(n_epochs=4, warmup_epochs=1), "warmup_epochs=1 is read as warmup_ratio")
    assert spec.hyperparameters.warmup_ratio == 0.25
    assert _load(_minimal(n_epochs=2, warmup_epochs=5)).hyperparameters.warmup_ratio == 1.0  # clamped
    assert (
        "but warmup_ratio is 0.5"
        in _errors(_minimal(n_epochs=4, warmup_epochs=1, warmup_ratio=0.5))["hyperparameters.warmup_epochs"]
    )


def test_direct_construction_checks_too():
    with pytest.raises(ValidationError, match="but n_evals is 3"):
        JobSpec.model_validate(_minimal(n_epochs=4, evaluation_epochs=2, n_evals=3))
    with pytest.raises(ValidationError, match="is not a batch size"):
        JobSpec.model_validate(dict(_minimal(batch_size=6), base_model_id=LLAMA_31_INSTRUCT))
    spec = JobSpec.model_validate(_minimal(n_epochs=4, evaluation_epochs=4))
    assert spec.hyperparameters.n_evals == 1
    spec.hyperparameters.n_epochs = 8  # the alias is re-read when n_epochs changes
    assert spec.hyperparameters.n_evals == 2


def test_trainable_modules_forms():
    spec = _load(_minimal(lora={"trainable_modules": "q_proj, v_proj"}))
    assert spec.hyperparameters.lora.trainable_modules == ["q_proj", "v_proj"]
    assert (
        "lists q_proj more than once"
        in _errors(_minimal(lora={"trainable_modules": ["q_proj", "q_proj"]}))["hyperparameters.lora.trainable_modules"]
    )


# --- dataset files ---


def _csv(path, rows="answer\nyes\n"):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(rows)
    return path


def test_dataset_csv_relative_to_the_job_file(tmp_path, monkeypatch):
    train = _csv(tmp_path / "jobs" / "data" / "train.csv")
    job = tmp_path / "jobs" / "job.json"
    job.write_text(json.dumps(dict(_minimal(), dataset={"id": "data/train.csv", "answer_column": "answer"})))
    monkeypatch.chdir(tmp_path)
    files = _load(job).dataset_files()
    assert files.train == tmp_path / "jobs" / "data" / "train.csv" and files.validation is None
    assert files.train.read_text() == train.read_text()


def test_dataset_folder_and_validation_file(tmp_path, monkeypatch):
    _csv(tmp_path / "ds" / "train.csv")
    monkeypatch.chdir(tmp_path)  # a dict body reads relative paths from the current folder
    body = dict(_minimal(), dataset={"id": "ds", "answer_column": "answer"})
    assert _load(body).dataset_files() == (tmp_path / "ds" / "train.csv", None)
    _csv(tmp_path / "ds" / "validation.csv")
    assert _load(body).dataset_files().validation == tmp_path / "ds" / "validation.csv"
    _csv(tmp_path / "other_val.csv")
    files = _load(dict(body, local={"validation_file": "other_val.csv"})).dataset_files()
    assert files.validation == tmp_path / "other_val.csv"  # explicit file wins over the folder's
    files = _load(body).dataset_files(base_dir=tmp_path)
    assert files.train == tmp_path / "ds" / "train.csv"


def test_missing_dataset_files_are_named(tmp_path):
    body = dict(
        _minimal(),
        dataset={"id": "nope.csv", "answer_column": "answer"},
        local={"validation_file": "val.csv"},
    )
    spec = _load(body, base_dir=tmp_path)
    with pytest.raises(JobSpecError) as err:
        spec.dataset_files()
    problems = {p.path: p.message for p in err.value.errors}
    assert problems == {
        "dataset.id": f"no such file or folder: {tmp_path / 'nope.csv'}",
        "local.validation_file": f"no such file: {tmp_path / 'val.csv'}",
    }
    (tmp_path / "empty").mkdir()
    with pytest.raises(JobSpecError, match="has no train.csv"):
        _load(
            dict(body, dataset={"id": "empty", "answer_column": "answer"}, local={}), base_dir=tmp_path
        ).dataset_files()
    _csv(tmp_path / "t.csv")
    with pytest.raises(JobSpecError, match="is the training file itself"):
        _load(
            dict(body, dataset={"id": "t.csv", "answer_column": "answer"}, local={"validation_file": "t.csv"}),
            base_dir=tmp_path,
        ).dataset_files()


# --- the demo client's YAML layout ---


def test_demo_client_yaml(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(DEMO_YAML)
    _csv(tmp_path / "data" / "train.csv", "question,answer\nq,a\n")
    _csv(tmp_path / "data" / "validation.csv", "question,answer\nq,a\n")
    with pytest.warns(JobSpecWarning):
        spec = load_job(path)
    hp = spec.hyperparameters
    assert spec.base_model_id == LLAMA_31_INSTRUCT and spec.name == "config"
    assert (hp.batch_size, hp.learning_rate, hp.n_epochs, hp.n_evals, hp.weight_decay, hp.warmup_ratio) == (
        32,
        1e-5,
        3,
        6,
        0.03,
        0,
    )
    assert (hp.lora.enabled, hp.lora.alpha, hp.lora.r, hp.lora.dropout, hp.lora.trainable_modules) == (
        True,
        16,
        8,
        0,
        [],
    )
    assert (spec.dataset.prompt_column, spec.dataset.answer_column, spec.dataset.id) == (
        "question",
        "answer",
        "data/train.csv",
    )
    assert spec.dataset_files() == (tmp_path / "data" / "train.csv", tmp_path / "data" / "validation.csv")
    assert any("api.fine_tuning_base_url, api.inference_base_url, api.timeout" in n for n in spec.notes)
    assert _load(DEMO_YAML.replace("model:\n", "job:\n  name: pubmedqa\nmodel:\n")).name == "pubmedqa"


def test_demo_yaml_errors_use_the_files_paths():
    text = (
        DEMO_YAML.replace("num_epochs: 3", "num_epochs: 50")
        .replace("  r: 8", "  r: 100")
        .replace("  base_model:", "  base_modle:")
        .replace("weight_decay", "weigth_decay")
    )
    errors = _errors(text)
    assert set(errors) == {
        "training.num_epochs",
        "lora.r",
        "model.base_modle",
        "training.weigth_decay",
        "model.base_model",
    }
    assert "did you mean 'base_model'" in errors["model.base_modle"]
    assert "did you mean 'weight_decay'" in errors["training.weigth_decay"]
    assert "allowed: 1..20" in errors["training.num_epochs"]
    assert "is required" in errors["model.base_model"]
    errors = _errors("name: a\njob:\n  name: b\n" + DEMO_YAML)
    assert "disagrees with name='a'" in errors["job.name"]
    errors = _errors(DEMO_YAML + "hyperparameters:\n  n_epochs: 1\nextra:\n  x: 1\n")
    assert set(errors) == {"hyperparameters", "extra"}


def test_demo_yaml_missing_files_use_the_files_paths(tmp_path):
    path = tmp_path / "config.yml"
    path.write_text(DEMO_YAML)
    with pytest.raises(JobSpecError) as err:
        _load(path).dataset_files()
    assert {p.path for p in err.value.errors} == {"dataset.train_file", "dataset.validation_file"}


# --- reading and writing files ---


def test_json_yaml_text_and_spec_sources(tmp_path):
    body = _minimal(n_epochs=2)
    (tmp_path / "a.json").write_text(json.dumps(body))
    (tmp_path / "b.yaml").write_text(
        "name: job\nbase_model_id: bundled\ndataset:\n  id: data.csv\n"
        "  answer_column: answer\nhyperparameters:\n  n_epochs: 2\n"
    )
    for source in (
        tmp_path / "a.json",
        str(tmp_path / "b.yaml"),
        json.dumps(body),
        (tmp_path / "b.yaml").read_text(),
    ):
        assert _load(source).dump() == body
    spec = _load(tmp_path / "a.json")
    assert spec.source == str(tmp_path / "a.json") and spec.base_dir == tmp_path.resolve()
    again = _load(spec)
    assert again.dump() == body and again.base_dir == spec.base_dir


def test_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="job file not found"):
        load_job(tmp_path / "nope.json")
    (tmp_path / "job.txt").write_text("{}")
    with pytest.raises(JobSpecError, match="unsupported job file type"):
        load_job(tmp_path / "job.txt")
    (tmp_path / "bad.json").write_text('{"name": "x",\n "base_model_id": }')
    with pytest.raises(JobSpecError, match="invalid JSON at line 2, column 19"):
        load_job(tmp_path / "bad.json")
    (tmp_path / "dup.json").write_text('{"name": "x", "name": "y"}')
    with pytest.raises(JobSpecError, match="key 'name' appears twice"):
        load_job(tmp_path / "dup.json")
    (tmp_path / "dup.yaml").write_text("name: x\nhyperparameters:\n  n_epochs: 1\n  n_epochs: 2\n")
    with pytest.raises(JobSpecError, match="key 'n_epochs' appears twice.*line 4"):
        load_job(tmp_path / "dup.yaml")


def test_save_job_round_trips_and_rebases_paths(tmp_path, docs_body):
    body = dict(docs_body, base_model_id=LLAMA_31_INSTRUCT)
    out = save_job(_load(body), tmp_path / "saved" / "job.json")
    assert json.loads(out.read_text()) == body
    assert _load(out).dump() == body
    assert [p.name for p in out.parent.iterdir()] == ["job.json"]  # nothing half-written left behind

    _csv(tmp_path / "src" / "data" / "train.csv")
    (tmp_path / "src" / "job.json").write_text(
        json.dumps(dict(_minimal(), dataset={"id": "data/train.csv", "answer_column": "answer"}))
    )
    moved = save_job(_load(tmp_path / "src" / "job.json"), tmp_path / "runs" / "x" / "job.json")
    assert json.loads(moved.read_text())["dataset"]["id"] == "../../src/data/train.csv"
    assert _load(moved).dataset_files().train.resolve() == (tmp_path / "src" / "data" / "train.csv").resolve()


def test_with_updates():
    spec = _load(_minimal(n_epochs=2))
    new = spec.with_updates({"hyperparameters": {"lora": {"r": 16}}, "local": {"seed": 1}})
    assert new.dump() == dict(_minimal(n_epochs=2, lora={"r": 16}), local={"seed": 1})
    with pytest.raises(JobSpecError, match="hyperparameters.lora.r"):
        spec.with_updates({"hyperparameters": {"lora": {"r": 0}}})


# --- the fields table ---


def test_fields_table_covers_every_field():
    from ftkit.job.problems import all_paths

    table = fields_table()
    lines = table.splitlines()
    assert lines[0] == "| field | type | default | allowed | meaning |"
    rows = {line.split(" | ")[0].strip("| `"): line for line in lines[2:]}
    assert list(rows) == all_paths(JobSpec)
    assert len(rows) == 43
    assert all(line.count(" | ") == 4 for line in lines[2:])
    assert "| `hyperparameters.n_epochs` | integer | `1` | 1..20 | Complete passes" in rows["hyperparameters.n_epochs"]
    assert "| `hyperparameters.learning_rate` | number | `1e-05` | 1e-08 <= value <= 0.01 |" in table
    assert "| `name` | string | required |" in table
    assert all(line.rstrip(" |").split(" | ")[-1] for line in lines[2:])  # every field has a meaning


# --- ftkit check-job ---


def test_check_job_cli(tmp_path, capsys):
    # two rows: check-job runs the data checks, and one row leaves nothing to train on after the 1% hold-out
    _csv(tmp_path / "data" / "train.csv", "question,answer\nq,a\nr,b\n")
    job = tmp_path / "job.json"
    job.write_text(
        json.dumps(
            dict(
                _minimal(n_evals=2),
                dataset={"id": "data/train.csv", "prompt_column": "question", "answer_column": "answer"},
            )
        )
    )
    assert main(["check-job", str(job)]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out) == _load(job).normalized()
    assert "note: n_evals=2 and no validation file" in err and f"train data: {tmp_path / 'data' / 'train.csv'}" in err

    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nbase_model_id: llama3\ndataset:\n  id: d.csv\nhyperparameters:\n  n_epochs: 30\n")
    assert main(["check-job", str(bad)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "3 problems" in err
    for path in ("base_model_id:", "dataset.answer_column:", "hyperparameters.n_epochs:"):
        assert path in err

    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(_minimal()))
    assert main(["check-job", str(missing)]) == 1
    assert f"no such file or folder: {tmp_path / 'data.csv'}" in capsys.readouterr().err
    assert main(["check-job", "--no-files", str(missing)]) == 0
    assert main(["check-job", str(tmp_path / "nope.json")]) == 1
    assert "job file not found" in capsys.readouterr().err
