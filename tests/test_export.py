"""Export archives (adapter and merged), safe loading, and pushing to the Hugging Face Hub without a network.

The main round trip uses the real bundled SmolLM2 trained for one step on real PubMedQA rows; merging, archive
safety and the Hub paths use a tiny random Llama (seconds).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
import threading
import time
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ftkit.cli import main as cli
from ftkit.export.hub import HubError, push_to_hub
from ftkit.export.merge import probe_logits
from ftkit.export.stage import ExportError, export_job
from ftkit.models.exported import UnsafeArchiveError, extract_archive, load_exported

SECRET = "hf_TESTtokenThatMustNeverLeak0123456789"


def spec_for(tmp: Path, model: str, data: Path, name: str, **hp) -> dict:
    local = hp.pop("local", {})
    return {
        "name": name,
        "base_model_id": model,
        "dataset": {"id": str(data), "prompt_column": "prompt", "answer_column": "answer"},
        "hyperparameters": {
            "batch_size": 2,
            "learning_rate": 1e-3,
            "n_evals": 1,
            "lora": {"r": 4, "alpha": 8},
            **hp,
        },
        "local": {"output_dir": str(tmp / "runs"), "seed": 1, **local},
    }


def adapter_logits(base_ref: str, adapter_dir: Path):
    """Base + adapter logits on the probe prompt, loaded independently of the export code."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    from ftkit.models.loading import load_model

    base, _, _ = load_model(base_ref, dtype="fp32")
    tok = AutoTokenizer.from_pretrained(adapter_dir)
    base_logits = probe_logits(base, tok)
    return base_logits, probe_logits(PeftModel.from_pretrained(base, adapter_dir).eval(), tok)


def members(archive: Path) -> dict[str, tarfile.TarInfo]:
    with tarfile.open(archive) as tar:
        return {m.name: m for m in tar.getmembers()}


def read_member(archive: Path, name: str) -> str:
    with tarfile.open(archive) as tar:
        return tar.extractfile(name).read().decode()


# --- the real model: adapter round trip ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def bundled_job(tmp_path_factory, pqal_path):
    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa
    from ftkit.train.engine import train

    tmp = tmp_path_factory.mktemp("export-bundled")
    ds = prepare_pubmedqa(tmp / "pubmedqa", source=pqal_path, max_train=8, max_validation=4, max_test=4)
    spec = spec_for(tmp, "bundled", ds.out, "pubmedqa-export", local={"max_steps": 1, "max_seq_length": 128})
    return train(spec, quiet=True), ds


@pytest.mark.slow
def test_adapter_archive_round_trip_on_the_bundled_model(bundled_job, tmp_path, monkeypatch):
    job, ds = bundled_job
    base, before = adapter_logits("bundled", job.model_dir)
    assert float((before - base).abs().max()) > 1e-3  # the adapter really changes the model

    out = export_job(job, out=tmp_path / "exports" / "adapter.tar.gz")
    assert out.is_file() and not [p for p in out.parent.iterdir() if p != out]  # no temp leftovers
    names = set(members(out))
    assert names == {
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "chat_template.jinja",
        "job.json",
        "metrics.jsonl",
        "metrics.csv",
        "data_manifest.json",
        "dataset_manifest.json",
        "versions.json",
        "README.md",
        "ftkit_export.json",
    }
    assert all(m.isfile() and not m.name.startswith("/") for m in members(out).values())

    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))
    model, tok = load_exported(out)
    assert type(model).__name__ == "PeftModelForCausalLM"
    after = probe_logits(model, tok)
    assert float((after - before).abs().max()) < 1e-5
    extracted = list((tmp_path / "cache" / "exports").iterdir())
    assert len(extracted) == 1 and (extracted[0] / "adapter_model.safetensors").is_file()
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert chat.startswith("<|im_start|>")

    # what the archive says about the job, its data and the model
    rec = json.loads(read_member(out, "job.json"))
    assert rec["name"] == "pubmedqa-export" and "pid" not in rec and "host" not in rec
    data = json.loads(read_member(out, "data_manifest.json"))
    assert data["files"]["train"]["sha256"] == job.record["data"]["train"]["sha256"]
    assert data["files"]["train"]["rows_used"] == 8 and data["files"]["validation"]["rows_used"] == 4
    assert json.loads(read_member(out, "dataset_manifest.json")) == ds.manifest
    metrics_csv = read_member(out, "metrics.csv").splitlines()
    assert metrics_csv[0].startswith("step,epoch,train_loss,eval_loss") and len(metrics_csv) == 1 + len(job.metrics())
    assert json.loads(read_member(out, "versions.json"))["training"]["transformers"]
    cfg = json.loads(read_member(out, "adapter_config.json"))
    assert cfg["base_model_name_or_path"] == "HuggingFaceTB/SmolLM2-135M-Instruct"
    manifest = json.loads(read_member(out, "ftkit_export.json"))
    assert manifest["kind"] == "adapter" and manifest["base_model"]["ref"] == "bundled"

    card = read_member(out, "README.md")
    eval_loss = job.record["result"]["eval_loss"]
    for text in (
        "base_model: HuggingFaceTB/SmolLM2-135M-Instruct",
        "library_name: peft",
        "SmolLM2-135M-Instruct",
        "| learning_rate | 0.001 |",
        "| batch_size | 2 |",
        "| lora.r | 4 |",
        "| lora.alpha | 8 |",
        "| local.max_steps | 1 |",
        f"| final eval loss | {eval_loss:.4g} |",
        data["files"]["train"]["sha256"],
        "PubMedQA",
    ):
        assert text in card, text


# --- tiny model: merge, evaluation files, CLI, safety -------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_job(tmp_path_factory, tiny_model_dir):
    from ftkit.train.engine import train

    tmp = tmp_path_factory.mktemp("export-tiny")
    base = tmp / "base-model"  # a copy, so a test can make it look quantised
    shutil.copytree(tiny_model_dir, base)
    data = tmp / "data"
    data.mkdir()
    for split, numbers in (("train", range(12)), ("validation", range(100, 104))):
        rows = "".join(f'"Is {i} even?",{"yes" if i % 2 == 0 else "no"}\n' for i in numbers)
        (data / f"{split}.csv").write_text("prompt,answer\n" + rows)
    job = train(spec_for(tmp, str(base), data, "tiny-export", learning_rate=1e-2, local={"max_steps": 2}), quiet=True)
    return job, base


MERGED_LOAD = textwrap.dedent("""
    import json, sys, torch
    from transformers import PreTrainedModel
    from ftkit.models.exported import load_exported
    from ftkit.export.merge import probe_logits
    model, tok = load_exported(sys.argv[1])
    again, _ = load_exported(sys.argv[1])  # the second load reuses the extracted folder
    torch.save(probe_logits(model, tok), sys.argv[2])
    print(json.dumps({"peft_imported": any(m == "peft" or m.startswith("peft.") for m in sys.modules),
                      "pretrained": isinstance(model, PreTrainedModel), "type": type(model).__name__}))
""")


def test_merged_archive_loads_without_peft_and_matches_base_plus_adapter(tiny_job, tmp_path, capfd):
    import torch

    job, base = tiny_job
    out = export_job(job, out=tmp_path / "merged.tar.gz", merged=True, quiet=True, dtype="fp32")
    assert "Writing model shards" not in capfd.readouterr().err  # a bar frozen at 0% in notebook 05's saved output
    names = set(members(out))
    assert {"model.safetensors", "config.json", "tokenizer.json", "chat_template.jinja", "README.md"} <= names
    assert not names & {"adapter_model.safetensors", "adapter_config.json"}
    manifest = json.loads(read_member(out, "ftkit_export.json"))
    assert manifest["kind"] == "merged" and manifest["merge_check"]["dtype"] == "fp32"
    assert manifest["merge_check"]["max_abs_diff"] < manifest["merge_check"]["tolerance"]
    assert "library_name: transformers" in read_member(out, "README.md")

    logits_file = tmp_path / "logits.pt"
    env = {**os.environ, "FTKIT_CACHE": str(tmp_path / "cache")}
    res = subprocess.run(
        [sys.executable, "-c", MERGED_LOAD, str(out), str(logits_file)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    info = json.loads(res.stdout.strip().splitlines()[-1])
    assert info == {"peft_imported": False, "pretrained": True, "type": "LlamaForCausalLM"}
    assert len(list((tmp_path / "cache" / "exports").iterdir())) == 1

    base_logits, expected = adapter_logits(str(base), job.model_dir)
    merged_logits = torch.load(logits_file)
    assert float((expected - base_logits).abs().max()) > 1e-3
    assert float((merged_logits - expected).abs().max()) < 1e-4


def test_merge_is_refused_for_a_quantised_base_or_a_failed_logit_check(tiny_job, tmp_path, monkeypatch):
    job, base = tiny_job
    cfg_path = base / "config.json"
    original = cfg_path.read_text()
    cfg = json.loads(original)
    cfg["quantization_config"] = {"quant_method": "bitsandbytes", "load_in_4bit": True}
    cfg_path.write_text(json.dumps(cfg))
    try:
        with pytest.raises(ExportError, match=r"quantised \(bitsandbytes\).*never merged"):
            export_job(job, out=tmp_path / "q.tar.gz", merged=True, quiet=True)
    finally:
        cfg_path.write_text(original)
    assert list(tmp_path.iterdir()) == []

    # a zero tolerance: the merged model's rounding differences are enough to refuse, naming the difference
    import ftkit.export.merge

    monkeypatch.setattr(ftkit.export.merge, "MERGE_RTOL", {"fp32": 0.0, "fp16": 0.0, "bf16": 0.0})
    with pytest.raises(ExportError, match=r"differ by up to [0-9.e-]+ \(allowed 0\); nothing was exported"):
        export_job(job, out=tmp_path / "m.tar.gz", merged=True, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_evaluation_results_go_into_the_archive_and_the_model_card(tiny_job, tmp_path):
    job, _ = tiny_job
    evals = tmp_path / "eval"
    evals.mkdir()
    result = {"model": "tuned", "accuracy": 0.625, "macro_f1": 0.5, "per_class": {"yes": {"f1": 0.7}}}
    (evals / "tuned.metrics.json").write_text(json.dumps(result))
    (evals / "tuned.predictions.json").write_text(json.dumps({"1": "yes"}))
    out = export_job(job, out=tmp_path / "a.tar.gz", evaluation=evals)
    assert "evaluation/tuned.metrics.json" in members(out)
    assert "evaluation/tuned.predictions.json" not in members(out)  # per-row predictions stay out
    out2 = export_job(job, out=tmp_path / "b.tar.gz", evaluation={"accuracy": 0.75, "api_token": SECRET})
    assert json.loads(read_member(out2, "evaluation.json")) == {"accuracy": 0.75, "api_token": "***"}
    card = read_member(out, "README.md")
    assert "## Evaluation" in card and "| accuracy | 0.625 |" in card and "| per_class.yes.f1 | 0.7 |" in card
    assert SECRET not in out2.read_bytes().decode("latin-1")
    with pytest.raises(ExportError, match="evaluation='nope.json': no such file or folder"):
        export_job(job, out=tmp_path / "c.tar.gz", evaluation="nope.json")


def test_export_refuses_unfinished_jobs_and_bad_archive_names(tiny_job, tmp_path, capsys):
    job, _ = tiny_job
    running = tmp_path / "runs" / "half"
    running.mkdir(parents=True)
    (running / "job.json").write_text(json.dumps({"id": "half", "name": "half", "status": "running"}))
    with pytest.raises(ExportError, match="job 'half' is running; only a completed job has a model"):
        export_job(running, out=tmp_path / "h.tar.gz")
    assert cli(["export", str(job.path), "--out", str(tmp_path / "x.zip")]) == 1
    assert "must end with .tar.gz or .tgz" in capsys.readouterr().err
    out = tmp_path / "c.tgz"
    assert cli(["export", "tiny-export", "--jobs-dir", str(job.path.parent), "--out", str(out)]) == 0
    assert f"wrote {out}" in capsys.readouterr().out and out.is_file()


def add_member(
    tar: tarfile.TarFile, name: str, data: bytes = b"", kind: bytes = tarfile.REGTYPE, linkname: str = ""
) -> None:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


@pytest.mark.parametrize("bad", ["absolute", "dotdot", "symlink", "hardlink", "device", "all"])
def test_unsafe_archives_are_refused_before_anything_is_extracted(tmp_path, bad, monkeypatch):
    outside = tmp_path / "outside.txt"
    archive = tmp_path / "evil.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        add_member(tar, "README.md", b"a harmless first member")
        add_member(tar, "ftkit_export.json", b'{"kind": "merged"}')
        if bad in ("absolute", "all"):
            add_member(tar, str(outside), b"pwned")
        if bad in ("dotdot", "all"):
            add_member(tar, "../outside.txt", b"pwned")
        if bad in ("symlink", "all"):
            add_member(tar, "config.json", kind=tarfile.SYMTYPE, linkname="/etc/passwd")
        if bad in ("hardlink", "all"):
            add_member(tar, "tokenizer.json", kind=tarfile.LNKTYPE, linkname="/etc/passwd")
        if bad in ("device", "all"):
            add_member(tar, "model.safetensors", kind=tarfile.CHRTYPE)
    expected = {
        "absolute": f"'{outside}': absolute path",
        "dotdot": "'../outside.txt': '..' leads outside",
        "symlink": "'config.json': symbolic link to '/etc/passwd'",
        "hardlink": "'tokenizer.json': hard link to '/etc/passwd'",
        "device": "'model.safetensors': not a regular file or folder",
    }
    dest = tmp_path / "dest"
    with pytest.raises(UnsafeArchiveError) as err:
        extract_archive(archive, dest)
    message = str(err.value)
    assert "nothing was extracted" in message
    for key, text in expected.items():
        assert (text in message) == (bad in (key, "all")), (key, message)
    assert not dest.exists() and not outside.exists()
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))
    with pytest.raises(UnsafeArchiveError):
        load_exported(archive)
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("README.md"))


# --- Hugging Face Hub: arguments, no network, rejected token ----------------------------------------------


@pytest.fixture
def no_hf_token(monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(hc, "HF_TOKEN_PATH", str(tmp_path / "hf" / "token"))
    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", False)


def files_containing(root: Path, text: str) -> list[Path]:
    return [p for p in root.rglob("*") if p.is_file() and text.encode() in p.read_bytes()]


def test_push_argument_errors(tiny_job, no_hf_token, capsys):
    job, _ = tiny_job
    with pytest.raises(HubError, match="no repo id: give one like 'your-user/my-model'"):
        push_to_hub(job, repo_id="", token=SECRET)
    for bad in ("no-namespace", "a/b/c", "user/bad name", "user/a--b", "/name", "user/x.git"):
        with pytest.raises(HubError, match=f"repo id '{bad}' is not valid"):
            push_to_hub(job, repo_id=bad, token=SECRET)
    with pytest.raises(HubError, match="no Hugging Face token: pass token=..., set HF_TOKEN"):
        push_to_hub(job, repo_id="user/model")
    args = ["push", str(job.path), "--repo-id", "user/model", "--token-env", "FTKIT_TEST_NO_SUCH_VAR"]
    assert cli(args) == 1
    assert "environment variable FTKIT_TEST_NO_SUCH_VAR is not set" in capsys.readouterr().err
    assert cli(["push", str(job.path)]) == 1
    assert "no repo id" in capsys.readouterr().err


def test_push_without_network_fails_fast_and_never_shows_the_token(tiny_job, tmp_path, no_hf_token, monkeypatch):
    job, _ = tiny_job
    t0 = time.monotonic()
    unreachable = r"could not reach the Hugging Face Hub at http://127\.0\.0\.1:9"
    with pytest.raises(HubError, match=unreachable) as err:
        push_to_hub(job, repo_id="user/model", token=SECRET, endpoint="http://127.0.0.1:9")
    assert time.monotonic() - t0 < 5
    assert SECRET not in "".join(traceback.format_exception(err.value))

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="offline mode is on"):
        push_to_hub(job, repo_id="user/model", token=SECRET)
    monkeypatch.delenv("HF_HUB_OFFLINE")

    # the command line, in a fresh process that reads HF_ENDPOINT and the token from the environment
    env = {
        **os.environ,
        "HF_ENDPOINT": "http://127.0.0.1:9",
        "MY_HUB_TOKEN": SECRET,
        "HF_HOME": str(tmp_path / "hf"),
    }
    env.pop("HF_TOKEN", None)
    t0 = time.monotonic()
    res = subprocess.run(
        [
            sys.executable,
            "-m",
            "ftkit",
            "push",
            str(job.path),
            "--repo-id",
            "user/model",
            "--token-env",
            "MY_HUB_TOKEN",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert time.monotonic() - t0 < 60  # python start-up included; the Hub check itself gives up within 10 s
    assert res.returncode == 1
    assert "could not reach the Hugging Face Hub at http://127.0.0.1:9" in res.stderr
    assert SECRET not in res.stdout + res.stderr
    assert files_containing(tmp_path, SECRET) == [] and files_containing(job.path.parent, SECRET) == []


class _EchoingHub(BaseHTTPRequestHandler):
    """A Hub stand-in that answers every API call with an error quoting the Authorization header back."""

    status = 401

    def do_HEAD(self):
        self.send_response(200)
        self.end_headers()

    def do_POST(self):
        body = json.dumps({"error": f"bad credentials: {self.headers.get('authorization')}"}).encode()
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_PUT = do_POST

    def log_message(self, *args):
        pass


@pytest.mark.parametrize(
    "status, expected",
    [(401, "rejected the token (401 Unauthorized)"), (400, "answered 400 for 'user/model'")],
)
def test_hub_errors_are_explained_and_redacted(tiny_job, tmp_path, no_hf_token, status, expected):
    job, _ = tiny_job
    handler = type("Handler", (_EchoingHub,), {"status": status})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        with pytest.raises(HubError) as err:
            push_to_hub(job, repo_id="user/model", token=SECRET, endpoint=endpoint, quiet=True)
    finally:
        server.shutdown()
    text = "".join(traceback.format_exception(err.value)) + repr(err.value)
    assert expected in str(err.value) and SECRET not in text
    assert not list(job.path.parent.glob(".ftkit-push-*"))  # the staged export was cleaned up
    assert files_containing(job.path.parent, SECRET) == []


def test_model_card_metadata_follows_the_hub_conventions():
    """The Hub reads base model, library, dataset and evaluation results from the card's metadata."""
    from huggingface_hub import ModelCard

    from ftkit.export.card import model_card

    manifest = {
        "kind": "adapter",
        "job": {"id": "pq"},
        "base_model": {
            "hf_repo": "HuggingFaceTB/SmolLM2-135M-Instruct",
            "name": "SmolLM2",
            "ref": "bundled",
            "kind": "bundled",
        },
    }
    evaluation = {"evaluation/tuned.metrics.json": {"model": "tuned", "accuracy": 0.625, "macro_f1": 0.5}}
    text = model_card({"name": "pq", "spec": {}}, manifest, [], {"files": {}}, {"dataset": "PubMedQA"}, evaluation, {})
    card = ModelCard(text)
    assert card.data.base_model == "HuggingFaceTB/SmolLM2-135M-Instruct" and card.data.library_name == "peft"
    assert card.data.datasets == ["qiaojin/PubMedQA"] and "ftkit" in card.data.tags
    scores = {r.metric_name: r.metric_value for r in card.data.eval_results}
    assert scores == {"accuracy": 0.625, "macro_f1": 0.5} and card.data.eval_results[0].dataset_split == "test"
    # a dataset ftkit does not know gets no Hub dataset id and no evaluation metadata
    plain = ModelCard(model_card({"name": "x", "spec": {}}, manifest, [], {"files": {}}, None, evaluation, {}))
    assert plain.data.datasets is None and not plain.data.eval_results
