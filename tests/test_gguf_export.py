"""GGUF + Ollama Modelfile export (checked by reloading the GGUF with transformers) and the export precision.

The bundled SmolLM2 trained for one step on real PubMedQA rows is exported as GGUF f16 and q8_0 and as merged fp16 /
fp32; refusals, the CLI and the check's teeth use a tiny random Llama (seconds).
"""

from __future__ import annotations

import json
import shutil
import tarfile
from pathlib import Path

import pytest

from ftkit.cli import main as cli
from ftkit.export.errors import ExportError
from ftkit.export.merge import probe_logits
from ftkit.export.modelfile import modelfile_text, read_modelfile, render_go_template
from ftkit.export.stage import export_job
from ftkit.models.exported import load_exported


def spec_for(tmp: Path, model: str, data: Path, name: str, **local) -> dict:
    return {
        "name": name,
        "base_model_id": model,
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {"batch_size": 2, "learning_rate": 1e-2, "n_evals": 1, "lora": {"r": 4, "alpha": 8}},
        "local": {"output_dir": str(tmp / "runs"), "seed": 1, **local},
    }


def members(archive: Path) -> dict[str, int]:
    with tarfile.open(archive) as tar:
        return {m.name: m.size for m in tar.getmembers()}


def read_member(archive: Path, name: str) -> str:
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read().decode()


def reference(base_ref: str, adapter_dir: Path):
    """Base + adapter (peft, fp32) and its tokenizer, loaded independently of the export code."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from ftkit.models.loading import load_model

    base, _, _ = load_model(base_ref, dtype="fp32")
    return PeftModel.from_pretrained(base, adapter_dir).eval(), AutoTokenizer.from_pretrained(adapter_dir)


@pytest.fixture(scope="module")
def bundled_job(tmp_path_factory, pqal_path):
    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
    from ftkit.train.engine import train

    tmp = tmp_path_factory.mktemp("gguf-bundled")
    ds = prepare_pubmedqa(tmp / "pubmedqa", source=pqal_path, max_train=8, max_validation=4, max_test=4)
    return train(spec_for(tmp, "bundled", ds.out, "pubmedqa-gguf", max_steps=1, max_seq_length=128), quiet=True)


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory, tiny_model_dir):
    from ftkit.train.engine import train

    tmp = tmp_path_factory.mktemp("gguf-tiny")
    data = tmp / "data"
    data.mkdir()
    for split, numbers in (("train", range(12)), ("validation", range(100, 104))):
        rows = "".join(f'"Is {i} even?",{"yes" if i % 2 == 0 else "no"}\n' for i in numbers)
        (data / f"{split}.csv").write_text("prompt,answer\n" + rows)
    return train(spec_for(tmp, str(tiny_model_dir), data, "tiny-gguf", max_steps=2), quiet=True), tiny_model_dir


@pytest.mark.slow
def test_gguf_export_of_a_bundled_job_reloads_like_the_merged_model_with_a_valid_modelfile(bundled_job, tmp_path):
    import gguf
    from transformers import AutoTokenizer

    job = bundled_job
    tok = AutoTokenizer.from_pretrained(job.model_dir)
    sizes = {}
    for quant in ("f16", "q8_0"):
        out = export_job(job, out=tmp_path / f"{quant}.tar.gz", format="gguf", quant=quant, quiet=True)
        name = f"{job.id}-{quant}.gguf"
        files = members(out)
        assert {name, "Modelfile", "README.md", "job.json", "metrics.csv", "ftkit_export.json"} <= set(files)
        assert not {"model.safetensors", "adapter_model.safetensors", "tokenizer.json"} & set(files)
        sizes[quant] = files[name]
        manifest = json.loads(read_member(out, "ftkit_export.json"))
        check = manifest["gguf"]["verification"]
        assert manifest["kind"] == "gguf" and manifest["gguf"]["quant"] == quant
        assert check["chat_template_round_trip"] and check["tokenizer_round_trip"]
        assert check["first_token_agree"] == "3/3" and check["greedy_agree"] in ("1/3", "2/3", "3/3")
        assert manifest["merge_check"]["dtype"] == "fp32"  # the GGUF is compared with the fp32 merged model

        folder = tmp_path / quant
        folder.mkdir()
        with tarfile.open(out) as tar:
            tar.extractall(folder, filter="data")
        reader = gguf.GGUFReader(folder / name)
        meta = {k: reader.fields[k].contents() for k in reader.fields if not k.startswith("GGUF.")}
        assert meta["general.architecture"] == "llama" and meta["tokenizer.ggml.model"] == "gpt2"
        assert meta["tokenizer.ggml.eos_token_id"] == tok.eos_token_id == tok.convert_tokens_to_ids("<|im_end|>")
        assert meta["tokenizer.ggml.padding_token_id"] == tok.pad_token_id != tok.eos_token_id
        assert meta["tokenizer.chat_template"] == tok.chat_template and meta["tokenizer.ggml.add_bos_token"] is False
        if quant == "f16":
            assert check["max_abs_diff"] < check["tolerance"] < 0.5 and check["greedy_agree"] == "3/3"
            assert {t.tensor_type.name for t in reader.tensors} == {"F16", "F32"}
        else:
            assert check["tolerance"] is None and check["max_abs_diff"] < 3.0
            assert "Q8_0" in {t.tensor_type.name for t in reader.tensors}

        modelfile = (folder / "Modelfile").read_text()
        entries = read_modelfile(modelfile)
        assert entries[0] == ("FROM", f"./{name}") and (folder / name).is_file()
        found = dict(entries)
        assert ("PARAMETER", 'stop "<|im_end|>"') in entries and ("PARAMETER", "num_ctx 8192") in entries
        assert found["SYSTEM"] == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
        chat = [{"role": "user", "content": "Is 4 even?"}, {"role": "assistant", "content": "yes"}]
        chat += [{"role": "user", "content": "And 7?"}]
        system = [{"role": "system", "content": found["SYSTEM"]}]
        rendered = tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True)
        assert render_go_template(found["TEMPLATE"], system + chat) == rendered
        card = (folder / "README.md").read_text()
        assert "library_name: gguf" in card and "ollama create" in card and f"in {quant.upper()}" in card
    assert 0.45 < sizes["q8_0"] / sizes["f16"] < 0.6


@pytest.mark.slow
def test_fp16_merged_export_is_half_the_fp32_size_and_matches_base_plus_adapter(
    bundled_job, bundled_model_dir, tmp_path
):
    job = bundled_job
    model, tok = reference("bundled", job.model_dir)
    expected = probe_logits(model, tok)
    out = export_job(job, out=tmp_path / "merged.tar.gz", merged=True, quiet=True)  # default: half precision
    manifest = json.loads(read_member(out, "ftkit_export.json"))
    assert manifest["dtype"] == manifest["merge_check"]["dtype"] == "fp16"
    loaded, loaded_tok = load_exported(out, dest=tmp_path / "x")
    diff = float((probe_logits(loaded, loaded_tok) - expected).abs().max())
    assert diff < manifest["merge_check"]["tolerance"] < 0.5
    assert json.loads((tmp_path / "x" / "config.json").read_text())["dtype"] == "float16"
    assert "The weights are saved in float16 (fp16)." in read_member(out, "README.md")
    # the same weights in fp32: the bundled base's own safetensors (the fp32 merged export is tested in test_export)
    fp32_bytes = (bundled_model_dir / "model.safetensors").stat().st_size
    assert 0.48 < members(out)["model.safetensors"] / fp32_bytes < 0.52


def test_gguf_export_from_the_command_line_loads_back_and_the_check_catches_unpermuted_weights(
    tiny_job, tmp_path, monkeypatch, capsys
):
    job, base = tiny_job
    out = tmp_path / "bf16.tgz"
    args = ["export", str(job.path), "--format", "gguf", "--quant", "bf16", "--out", str(out)]
    assert cli(args) == 0
    assert f"wrote {out}" in capsys.readouterr().out
    manifest = json.loads(read_member(out, "ftkit_export.json"))
    assert manifest["gguf"]["quant"] == "bf16" and manifest["gguf"]["verification"]["tolerance"] > 0
    model, tok = reference(str(base), job.model_dir)
    loaded, loaded_tok = load_exported(out, dest=tmp_path / "x")
    diff = float((probe_logits(loaded, loaded_tok) - probe_logits(model, tok)).abs().max())
    assert diff <= manifest["gguf"]["verification"]["tolerance"]

    # llama.cpp's q/k layout left out: the reload check refuses the file and nothing is left behind
    import ftkit.export.gguf

    monkeypatch.setattr(ftkit.export.gguf, "_permute", lambda w, n_head, n_kv: w)
    bad = tmp_path / "bad" / "x.tar.gz"
    with pytest.raises(
        ExportError, match=r"does not reload as the model.*logits differ by up to.*nothing was exported"
    ):
        export_job(job, out=bad, format="gguf", quiet=True)
    assert list(bad.parent.iterdir()) == []


def test_export_options_that_do_not_apply_are_refused_with_what_is_allowed(tiny_job, tmp_path, capsys):
    job, _ = tiny_job
    out = str(tmp_path / "a.tar.gz")
    cases = [
        (["--quant", "q8_0"], 2, "--quant q8_0 applies to --format gguf only"),
        (["--dtype", "fp16"], 1, "--dtype 'fp16' applies to merged and full exports; the adapter is exported as"),
        (["--format", "gguf", "--dtype", "fp16"], 1, "a GGUF export takes --quant"),
        (["--format", "onnx"], 2, "invalid choice: 'onnx'"),
        (["--merged", "--dtype", "fp8"], 2, "invalid choice: 'fp8'"),
    ]
    for extra, code, message in cases:
        assert cli(["export", str(job.path), "--out", out, *extra]) == code, extra
        assert message in capsys.readouterr().err, extra
    with pytest.raises(ExportError, match=r"--quant 'q4' is not a GGUF type ftkit writes \(allowed: f16, bf16, q8_0\)"):
        export_job(job, out=out, format="gguf", quant="q4", quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_architectures_and_tokenizers_gguf_cannot_write_are_refused_by_name(tiny_model_dir, tmp_path):
    from ftkit.export.gguf import write_gguf

    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**cfg, "model_type": "qwen2"}))
    with pytest.raises(ExportError, match=r"GGUF export supports llama \(Llama, SmolLM2, \.\.\.\) only; qwen2 not"):
        write_gguf(folder, tmp_path / "x.gguf")
    rope = {"rope_type": "llama3", "factor": 8.0, "rope_theta": 5e5}
    (folder / "config.json").write_text(json.dumps({**cfg, "rope_parameters": rope}))
    with pytest.raises(ExportError, match="rope scaling 'llama3'.*not supported yet"):
        write_gguf(folder, tmp_path / "x.gguf")
    (folder / "config.json").write_text(json.dumps(cfg))
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    tokenizer["pre_tokenizer"] = {"type": "Whitespace"}
    (folder / "tokenizer.json").write_text(json.dumps(tokenizer))
    with pytest.raises(ExportError, match=r"pre-tokenizer \(Whitespace\) not supported yet"):
        write_gguf(folder, tmp_path / "x.gguf")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]  # no GGUF, no temp file


def test_a_chat_template_ollama_cannot_express_is_refused(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    text = modelfile_text(tok, "m.gguf", 2048)
    assert 'TEMPLATE """{{ range .Messages }}' in text and "PARAMETER num_ctx 2048" in text
    tok.chat_template = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] | upper }}\n{% endfor %}"
    with pytest.raises(ExportError, match="cannot be written as an Ollama TEMPLATE"):
        modelfile_text(tok, "m.gguf", 2048)
    tok.chat_template = None
    with pytest.raises(ExportError, match="the tokenizer has no chat template"):
        modelfile_text(tok, "m.gguf", 2048)
