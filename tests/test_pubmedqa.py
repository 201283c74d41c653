"""PubMedQA preparation from the real PQA-L files: split, row format, determinism, downloads, errors."""

from __future__ import annotations

import functools
import http.server
import json
import re
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from ftkit.data import prepared as prepared_mod
from ftkit.data.pubmedqa import official as pubmedqa
from ftkit.data.pubmedqa.official import ChecksumMismatch, DatasetUnavailable
from ftkit.data.pubmedqa.prepare import prepare_pubmedqa

LACE_PLANT = "21645374"  # first PQA-L example: sections BACKGROUND and RESULTS


def read(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def split_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """An empty ftkit cache, no shared folder, and a download URL nothing listens on."""
    monkeypatch.setenv("FTKIT_CACHE", str(tmp_path / "cache"))
    (tmp_path / "no-shared").mkdir()
    monkeypatch.setenv("FTKIT_SHARED", str(tmp_path / "no-shared"))
    monkeypatch.setenv(pubmedqa.URL_ENV, "http://127.0.0.1:9/pubmedqa/data")
    return tmp_path


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, pqal_path):
    out = tmp_path_factory.mktemp("pubmedqa") / "full"
    return prepare_pubmedqa(out, source=pqal_path)


@pytest.fixture(scope="module")
def pqal(pqal_path):
    return json.loads(pqal_path.read_text())


def test_official_split(prepared, pqal, test_truth_path):
    truth = json.loads(test_truth_path.read_text())
    frames = {s: read(prepared.files[s]) for s in ("train", "validation", "test")}
    assert {s: len(f) for s, f in frames.items()} == {"train": 450, "validation": 50, "test": 500}
    test = frames["test"]
    assert set(test.pmid) == set(truth)
    assert Counter(test.final_decision) == {"yes": 276, "no": 169, "maybe": 55}
    assert all(truth[p] == d for p, d in zip(test.pmid, test.final_decision, strict=True))
    # train and validation are the other 500, disjoint, stratified: 276/169/55 split 50 ways -> 28/17/5
    assert Counter(frames["validation"].final_decision) == {"yes": 28, "no": 17, "maybe": 5}
    assert Counter(frames["train"].final_decision) == {"yes": 248, "no": 152, "maybe": 50}
    ids = [set(f.pmid) for f in frames.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(pqal)
    assert all(
        pqal[p]["final_decision"] == d for f in frames.values() for p, d in zip(f.pmid, f.final_decision, strict=True)
    )
    assert prepared.counts["test"] == {"yes": 276, "no": 169, "maybe": 55}
    assert "450" in repr(prepared) and "<table>" in prepared._repr_html_()


def test_rows_are_decision_first_with_labelled_sections(prepared, pqal):
    rows = pd.concat([read(prepared.files[s]) for s in ("train", "validation", "test")]).set_index("pmid")
    for pmid, r in rows.iterrows():
        rec = pqal[pmid]
        assert r.answer == f"{rec['final_decision']}. {' '.join(rec['LONG_ANSWER'].split())}"
        assert r.answer.split()[0].rstrip(".") == r.final_decision
        assert r.prompt.startswith(f"Question: {rec['QUESTION'].strip()}\n\nContext:\n")
        assert r.prompt.endswith("\n\n" + pubmedqa.INSTRUCTIONS["decision_long"])
    lace = rows.loc[LACE_PLANT].prompt.splitlines()
    assert lace[3].startswith("BACKGROUND: Programmed cell death (PCD) is the regulated death of cells")
    assert lace[4].startswith("RESULTS: The following paper elucidates the role of mitochondrial dynamics")
    # every section of every abstract appears with its label
    for pmid in list(rows.index)[:50]:
        rec = pqal[pmid]
        for label, text in zip(rec["LABELS"], rec["CONTEXTS"], strict=True):
            line = " ".join(text.split())
            assert (line if label == "UNLABELLED" else f"{label.upper()}: {line}") in rows.loc[pmid].prompt


@pytest.mark.parametrize("style", ["decision", "long"])
def test_answer_styles(tmp_path, pqal_path, pqal, style):
    ds = prepare_pubmedqa(tmp_path / style, source=pqal_path, answer_style=style, max_train=40, max_test=20)
    df = read(ds.train)
    for pmid, answer, decision, prompt in zip(df.pmid, df.answer, df.final_decision, df.prompt, strict=True):
        if style == "decision":
            assert answer == decision
        else:
            assert answer == " ".join(pqal[pmid]["LONG_ANSWER"].split())
        assert prompt.endswith(pubmedqa.INSTRUCTIONS[style])
    assert json.loads((ds.out / "manifest.json").read_text())["answer_style"] == style
    with pytest.raises(ValueError, match="answer_style must be one of"):
        prepare_pubmedqa(tmp_path / "bad", source=pqal_path, answer_style="short")


def test_deterministic_and_seeded(tmp_path, pqal_path, prepared):
    again = prepare_pubmedqa(tmp_path / "again", source=pqal_path)
    assert split_files(again.out) == split_files(prepared.out)
    other = prepare_pubmedqa(tmp_path / "seed7", source=pqal_path, seed=7)
    assert (other.out / "test.csv").read_bytes() == (prepared.out / "test.csv").read_bytes()
    assert set(read(other.validation).pmid) != set(read(prepared.validation).pmid)
    assert Counter(read(other.validation).final_decision) == {"yes": 28, "no": 17, "maybe": 5}


def test_stratified_subsamples(tmp_path, pqal_path, prepared):
    a = prepare_pubmedqa(tmp_path / "a", source=pqal_path, max_train=90, max_validation=10, max_test=100)
    b = prepare_pubmedqa(tmp_path / "b", source=pqal_path, max_train=90, max_validation=10, max_test=100)
    assert split_files(a.out) == split_files(b.out)
    assert a.counts == {
        "train": {"yes": 50, "no": 30, "maybe": 10},  # 248/152/50 of 450 -> 49.6/30.4/10
        "validation": {"yes": 6, "no": 3, "maybe": 1},  # 28/17/5 of 50 -> 5.6/3.4/1
        "test": {"yes": 55, "no": 34, "maybe": 11},  # 276/169/55 of 500 -> 55.2/33.8/11
    }
    for split in ("train", "validation", "test"):  # subsamples of the full split, not of other examples
        assert set(read(a.files[split]).pmid) <= set(read(prepared.files[split]).pmid)


def test_manifest(prepared, pqal_path, test_truth_path):
    text = (prepared.out / "manifest.json").read_text()
    m = json.loads(text)
    assert m["created_by"] == "ftkit" and m["ftkit_version"] == __import__("ftkit").__version__
    assert m["sources"]["ori_pqal.json"] == {"sha256": pubmedqa.sha256_file(pqal_path), "official": True}
    assert m["sources"]["test_ground_truth.json"]["sha256"] == pubmedqa.SHA256["test_ground_truth.json"]
    assert (m["seed"], m["n_validation"], m["max_train"], m["answer_style"]) == (
        42,
        50,
        None,
        "decision_long",
    )
    assert m["splits"]["validation"] == {"file": "validation.csv", "rows": 50,
                                         "labels": {"yes": 28, "no": 17, "maybe": 5}}  # fmt: skip
    assert m["columns"] == ["pmid", "prompt", "answer", "final_decision"]
    assert not re.search(r"20\d\d-\d\d-\d\d|time|date", text)  # no timestamps: byte-identical reruns


def test_failure_leaves_old_output_intact(tmp_path, pqal_path, monkeypatch):
    out = tmp_path / "data"
    prepare_pubmedqa(out, source=pqal_path, max_train=30)
    before = split_files(out)
    real = prepared_mod.write_csv
    calls = []

    def fail_on_second(path, columns, rows):
        calls.append(path)
        real(path, columns, rows[: len(rows) // 2])  # a half-written file...
        if len(calls) == 2:
            raise OSError("disk full")  # ...then the run dies

    monkeypatch.setattr(prepared_mod, "write_csv", fail_on_second)
    with pytest.raises(OSError, match="disk full"):
        prepare_pubmedqa(out, source=pqal_path)
    assert split_files(out) == before
    with pytest.raises(OSError, match="disk full"):
        calls.clear()
        prepare_pubmedqa(tmp_path / "fresh", source=pqal_path)
    assert not (tmp_path / "fresh").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folders left behind


class _Server:
    """http.server on 127.0.0.1 serving a folder, counting GET requests."""

    def __init__(self, folder: Path):
        self.requests: list[str] = []
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                server.requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), functools.partial(Handler, directory=str(folder))
        )
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def serve():
    servers = []

    def start(folder):
        servers.append(_Server(folder))
        return servers[-1]

    yield start
    for s in servers:
        s.close()


def test_download_from_http_server(isolated, serve, pqal_path, prepared, monkeypatch):
    server = serve(pqal_path.parent)
    monkeypatch.setenv(pubmedqa.URL_ENV, server.url)
    ds = prepare_pubmedqa(isolated / "out")
    assert sorted(server.requests) == ["/ori_pqal.json", "/test_ground_truth.json"]
    cache = isolated / "cache" / "pubmedqa"
    for name, digest in pubmedqa.SHA256.items():
        assert pubmedqa.sha256_file(cache / name) == digest
    assert split_files(ds.out) == split_files(prepared.out)
    prepare_pubmedqa(isolated / "out2")  # second run: from the cache, no request
    assert len(server.requests) == 2


def test_download_hash_mismatch_keeps_nothing(isolated, serve, pqal_path, monkeypatch):
    bad = isolated / "served"
    bad.mkdir()
    data = pqal_path.read_bytes()
    (bad / "ori_pqal.json").write_bytes(data.replace(b'"yes"', b'"no"', 1))  # one answer flipped
    server = serve(bad)
    with pytest.raises(ChecksumMismatch, match="does not match"):
        pubmedqa.fetch("ori_pqal.json", url=server.url)
    assert server.requests == ["/ori_pqal.json"]
    cache = isolated / "cache" / "pubmedqa"
    assert not cache.exists() or list(cache.iterdir()) == []


def test_offline_without_copy_names_the_cache_path(isolated):
    start = time.monotonic()
    with pytest.raises(DatasetUnavailable) as e:
        prepare_pubmedqa(isolated / "out")
    msg = str(e.value)
    assert str(isolated / "cache" / "pubmedqa" / "ori_pqal.json") in msg
    assert "http://127.0.0.1:9/pubmedqa/data/ori_pqal.json" in msg
    assert time.monotonic() - start < 30
    assert not (isolated / "out").exists()


def test_shared_copy_is_used_and_verified(isolated, pqal_path, monkeypatch):
    monkeypatch.setenv("FTKIT_SHARED", str(pqal_path.parent.parent))
    assert pubmedqa.fetch("ori_pqal.json") == pqal_path  # no download needed (the URL is unreachable)
    damaged = isolated / "damaged-shared"
    (damaged / "pubmedqa").mkdir(parents=True)
    (damaged / "pubmedqa" / "ori_pqal.json").write_bytes(pqal_path.read_bytes()[:-10])
    monkeypatch.setenv("FTKIT_SHARED", str(damaged))
    with pytest.raises(ChecksumMismatch, match=re.escape(str(damaged / "pubmedqa" / "ori_pqal.json"))):
        pubmedqa.fetch("ori_pqal.json")


def test_artificial_offline_fails_fast(isolated, monkeypatch):
    import huggingface_hub.constants

    start = time.monotonic()
    with pytest.raises(DatasetUnavailable, match="qiaojin/PubMedQA") as e:
        prepare_pubmedqa(isolated / "a", subset="artificial", cache_dir=isolated / "hf", endpoint="http://127.0.0.1:9")
    assert "pqa_artificial" in str(e.value) and "--source" in str(e.value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(DatasetUnavailable, match="HF_HUB_OFFLINE=1"):
        prepare_pubmedqa(isolated / "u", subset="unlabeled", cache_dir=isolated / "hf")
    assert time.monotonic() - start < 30
    assert not (isolated / "a").exists() and not (isolated / "u").exists()


def _hub_parquet(pqal: dict, path: Path, labelled: bool) -> Path:
    """Real PQA-L records in the Hub dataset's parquet schema (pubid, question, context struct, ...)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    recs = [(p, r) for p, r in pqal.items() if r["final_decision"] != "maybe"][:300]  # PQA-A is yes/no only
    cols = {
        "pubid": pa.array([int(p) for p, _ in recs], pa.int32()),
        "question": [r["QUESTION"] for _, r in recs],
        "context": [{"contexts": r["CONTEXTS"], "labels": r["LABELS"], "meshes": r["MESHES"]} for _, r in recs],
        "long_answer": [r["LONG_ANSWER"] for _, r in recs],
    }
    if labelled:
        cols["final_decision"] = [r["final_decision"] for _, r in recs]
    pq.write_table(pa.table(cols), path)
    return path


def test_artificial_and_unlabeled_from_parquet(tmp_path, pqal):
    src = _hub_parquet(pqal, tmp_path / "pqa_artificial.parquet", labelled=True)
    ds = prepare_pubmedqa(tmp_path / "a", subset="artificial", source=src, n_validation=20, max_train=100)
    assert set(ds.files) == {"train", "validation"}
    assert sum(ds.counts["validation"].values()) == 20 and sum(ds.counts["train"].values()) == 100
    train = read(ds.train)
    assert set(train.final_decision) == {"yes", "no"}
    for pmid, prompt, answer in zip(train.pmid, train.prompt, train.answer, strict=True):
        expected = pubmedqa.to_row(pmid, pqal[pmid], "decision_long")  # same format as PQA-L rows
        assert (prompt, answer) == (expected["prompt"], expected["answer"])
    manifest = json.loads((ds.out / "manifest.json").read_text())
    assert manifest["subset"] == "artificial" and manifest["sources"]["config"] == "pqa_artificial"

    src = _hub_parquet(pqal, tmp_path / "pqa_unlabeled.parquet", labelled=False)
    with pytest.raises(ValueError, match="only answer_style='long'"):
        prepare_pubmedqa(tmp_path / "u", subset="unlabeled", source=src, answer_style="decision_long")
    ds = prepare_pubmedqa(tmp_path / "u", subset="unlabeled", source=src, max_train=50)
    u = read(ds.train)
    assert list(u.columns) == ["pmid", "prompt", "answer"] and len(u) == 50 and set(ds.files) == {"train"}
    assert all(a == " ".join(pqal[p]["LONG_ANSWER"].split()) for p, a in zip(u.pmid, u.answer, strict=True))
    assert all(p.endswith(pubmedqa.INSTRUCTIONS["long"]) for p in u.prompt)


def test_cli_prepare(tmp_path, pqal_path, capsys):
    from ftkit.cli import main

    out = tmp_path / "cli"
    assert main(["prepare", "pubmedqa", "--out", str(out), "--source", str(pqal_path), "--max-train", "30"]) == 0
    printed = capsys.readouterr().out
    assert re.search(r"train\s+30\s+17\s+10\s+3", printed)  # 248/152/50 of 450 -> 16.5/10.1/3.3
    assert re.search(r"test\s+500\s+276\s+169\s+55", printed)
    assert main(["prepare", "pubmedqa", "--out", str(tmp_path / "x"), "--source", str(tmp_path / "nope.json")]) == 1
    assert "nope.json does not exist" in capsys.readouterr().err


def test_results_context_keeps_only_the_results_sections_and_halves_the_prompts(tmp_path, pqal_path, pqal, prepared):
    from ftkit.cli import main as cli
    from ftkit.data.pubmedqa.rows import results_sections

    out = tmp_path / "results"
    assert cli(["prepare", "pubmedqa", "--source", str(pqal_path), "--out", str(out), "--context", "results"]) == 0
    assert json.loads((out / "manifest.json").read_text())["context"] == "results"
    short = pd.read_csv(out / "train.csv", dtype=str, keep_default_na=False).set_index("pmid")
    full = pd.read_csv(prepared.train, dtype=str, keep_default_na=False).set_index("pmid")
    assert list(short.index) == list(full.index) and (short.answer == full.answer).all()
    for pmid in short.index[:50]:
        rec = pqal[pmid]
        labels = [x.upper() for x in rec["LABELS"]]
        text = short.prompt[pmid]
        if "RESULTS" in labels and "METHODS" in labels:
            assert "RESULTS: " in text and "METHODS: " not in text
    assert short.prompt.str.len().sum() < 0.65 * full.prompt.str.len().sum()
    # no section named as results: the last one stands for them
    assert results_sections(["a", "b", "c"], ["BACKGROUND", "METHODS", "CONCLUSIONS?"]) == (["c"], ["CONCLUSIONS?"])
    assert results_sections(["a", "b"], ["METHODS", "MAIN FINDINGS"]) == (["b"], ["MAIN FINDINGS"])
