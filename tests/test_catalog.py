"""The base-model catalog: the docs' model table, every way to name a model, and `ftkit models`."""

from __future__ import annotations

import json
import re

import pytest

from ftkit.cli import main
from ftkit.models import bundled, catalog
from ftkit.models.catalog import UnknownModelError, resolve_model
from ftkit.paths import shared_dir

UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"

# The Hugging Face repo each service model corresponds to.
HF_REPOS = {
    "Meta-Llama-3-8B-Instruct": "meta-llama/Meta-Llama-3-8B-Instruct",
    "Meta-Llama-3-8B": "meta-llama/Meta-Llama-3-8B",
    "Meta-Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B-Instruct",
    "Mistral-7B-Instruct-v0.1": "mistralai/Mistral-7B-Instruct-v0.1",
    "Mistral-7B-Instruct-v0.2": "mistralai/Mistral-7B-Instruct-v0.2",
    "DeepSeek-R1-Distill-Qwen-1.5B": "deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B",
    "DeepSeek-R1-Distill-Qwen-14B": "deepseek-ai/DeepSeek-R1-Distill-Qwen-14B",
    "Qwen2-1.5B-Instruct": "Qwen/Qwen2-1.5B-Instruct",
    "Qwen2.5-14B-Instruct": "Qwen/Qwen2.5-14B-Instruct",
}


@pytest.fixture(scope="module")
def docs_rows() -> list[dict]:
    """The model table of the service docs, parsed at test time so the catalog follows the docs."""
    shared = shared_dir()
    path = shared / "reference" / "nscale-fine-tuning-docs.txt" if shared else None
    if path is None or not path.is_file():
        pytest.fail(f"the service docs are expected at {path} (CI lays ../shared beside the clone)")
    rows = []
    pattern = re.compile(rf"^(Meta|Mistral AI|Deepseek|Qwen)(.+?)({UUID})(\d+)\(([\d,]+)\)(\w+)$")
    for line in path.read_text(encoding="utf-8").splitlines():
        m = pattern.match(line.strip())
        if m:
            org, name, uuid, ctx, sizes, precision = m.groups()
            rows.append(
                {
                    "organization": org,
                    "name": name.strip("”\"' "),
                    "id": uuid,
                    "context": int(ctx),
                    "batch_sizes": tuple(int(s) for s in sizes.split(",")),
                    "precision": precision,
                }
            )
    return rows


def test_catalog_is_the_docs_model_table(docs_rows):
    assert len(docs_rows) == 10
    assert [m.id for m in catalog.CATALOG] == [r["id"] for r in docs_rows]
    for m, row in zip(catalog.CATALOG, docs_rows, strict=True):
        assert (m.name, m.organization, m.known_context_length, m.batch_sizes) == (
            row["name"],
            row["organization"],
            row["context"],
            row["batch_sizes"],
        )
        assert m.precision == row["precision"].lower() == "float16"
        assert m.kind == "catalog" and m.hf_repo == HF_REPOS[m.name]
    # the docs' stray quote after Mistral-7B-Instruct-v0.1 is not part of the name
    assert "Mistral-7B-Instruct-v0.1" in [m.name for m in catalog.CATALOG]


@pytest.mark.parametrize("name", list(HF_REPOS))
def test_every_catalog_model_resolves_by_id_name_and_repo(name):
    entry = next(m for m in catalog.CATALOG if m.name == name)
    for ref in (entry.id, entry.id.upper(), name, name.lower(), name.upper(), HF_REPOS[name], f"  {name} "):
        info = resolve_model(ref)
        assert info is entry, ref
    assert info.source == HF_REPOS[name]
    assert info.context_length == 8192
    assert info.batch_sizes == (4, 8, 12, 16, 20, 24, 28, 32)


@pytest.mark.parametrize(
    "ref",
    [
        "bundled",
        "SmolLM2-135M-Instruct",
        "smollm2-135m-instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "BUNDLED",
    ],
)
def test_bundled_aliases_resolve_without_converting(ref, monkeypatch):
    calls = []
    monkeypatch.setattr(bundled, "ensure", lambda quiet=False: calls.append(1) or pytest.fail("converted"))
    info = resolve_model(ref)
    assert info is catalog.BUNDLED
    assert (info.kind, info.name, info.hf_repo, info.context_length) == (
        "bundled",
        "SmolLM2-135M-Instruct",
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        8192,
    )
    assert info.batch_sizes == tuple(range(1, 65))
    assert calls == []  # resolving and reading its fields never located or converted the model


def test_bundled_source_is_the_converted_folder(bundled_model_dir):
    src = resolve_model("bundled").source
    assert src == str(bundled_model_dir)
    assert json.loads((bundled_model_dir / "config.json").read_text())["max_position_embeddings"] == 8192


def test_local_folder_reads_its_config(tiny_model_dir):
    info = resolve_model(str(tiny_model_dir))
    assert (info.kind, info.context_length, info.id, info.hf_repo) == ("local", 2048, None, None)
    assert info.source == str(tiny_model_dir.resolve())
    assert info.batch_sizes == tuple(range(1, 65))
    assert info.name == tiny_model_dir.name
    # a relative folder is read from base_dir
    rel = resolve_model(tiny_model_dir.name, base_dir=tiny_model_dir.parent)
    assert rel.source == info.source


def test_local_folder_length_keys(tmp_path):
    (tmp_path / "gpt").mkdir()
    (tmp_path / "gpt" / "config.json").write_text(json.dumps({"n_positions": 1024, "torch_dtype": "bfloat16"}))
    (tmp_path / "vlm").mkdir()
    (tmp_path / "vlm" / "config.json").write_text(json.dumps({"text_config": {"max_position_embeddings": 4096}}))
    (tmp_path / "bare").mkdir()
    (tmp_path / "bare" / "config.json").write_text("{}")
    gpt = resolve_model(str(tmp_path / "gpt"))
    assert (gpt.context_length, gpt.precision) == (1024, "bfloat16")
    assert resolve_model(str(tmp_path / "vlm")).context_length == 4096
    assert resolve_model(str(tmp_path / "bare")).context_length is None


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(UnknownModelError, match="no config.json"):
        resolve_model(str(tmp_path))


def test_hub_repo_is_resolved_offline_and_read_lazily(tmp_path, monkeypatch):
    import huggingface_hub

    calls = []
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"max_position_embeddings": 32768}))

    def fake_download(repo_id, filename, **kw):
        calls.append((repo_id, filename))
        return str(config)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    monkeypatch.setattr(catalog, "hub_load_options", lambda repo: {})  # the Hub answers (this machine has no route)
    info = resolve_model("someorg/Some-Model-7B")
    assert (info.kind, info.organization, info.name, info.source) == (
        "hub",
        "someorg",
        "Some-Model-7B",
        "someorg/Some-Model-7B",
    )
    assert info.batch_sizes == tuple(range(1, 65)) and info.known_context_length is None
    assert calls == []  # nothing fetched until the context length is asked for
    assert info.context_length == 32768
    assert info.context_length == 32768
    assert calls == [("someorg/Some-Model-7B", "config.json")]  # fetched once


def test_hub_config_failure_names_the_repo(monkeypatch):
    import huggingface_hub

    def offline(*a, **kw):
        raise OSError("no network")

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    monkeypatch.setattr(catalog, "hub_load_options", lambda repo: {})  # reachable, then the download fails
    with pytest.raises(RuntimeError, match="someorg/other.*no network"):
        _ = resolve_model("someorg/other").context_length


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("Meta-Llama-3.1-8B-Instruc", "Meta-Llama-3.1-8B-Instruct"),
        ("llama3", "Meta-Llama-3-8B-Instruct"),
        ("qwen2.5", "Qwen2.5-14B-Instruct"),
        ("5b912da4-4a68-43eb-9224-38239535d933", "5b912da4-4a68-43eb-9224-38239535d934"),
        ("SmolLM2", "SmolLM2-135M-Instruct"),
    ],
)
def test_unknown_reference_suggests_close_matches(ref, expected):
    with pytest.raises(UnknownModelError) as err:
        resolve_model(ref)
    assert expected in err.value.suggestions
    assert "did you mean" in str(err.value) and repr(expected) in str(err.value)
    assert "ftkit models" in str(err.value)


def test_missing_local_path_is_reported_as_a_folder(tmp_path):
    with pytest.raises(UnknownModelError, match="no model folder"):
        resolve_model(str(tmp_path / "no" / "such-model"))


def test_list_models_and_table():
    models = catalog.list_models()
    assert len(models) == 11 and models[-1] is catalog.BUNDLED
    assert catalog.list_models(include_bundled=False) == list(catalog.CATALOG)
    df = catalog.catalog_table()
    assert list(df.columns) == [
        "name",
        "id",
        "organisation",
        "context",
        "batch sizes",
        "precision",
        "HF repo",
        "kind",
    ]
    assert len(df) == 11
    assert "5b912da4-4a68-43eb-9224-38239535d934" in df._repr_html_()


def test_models_cli(capsys):
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for m in catalog.CATALOG:
        assert m.id in out and m.name in out and m.hf_repo in out
    assert "SmolLM2-135M-Instruct" in out and "1..64" in out and "4,8,12,16,20,24,28,32" in out

    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 11
    assert rows[3]["id"] == "5b912da4-4a68-43eb-9224-38239535d934" and rows[3]["context"] == 8192
