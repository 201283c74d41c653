"""Dataset checks on small hand-written bad CSVs: each problem with its line and row, all at once; the CLI."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from ftkit.data.checks import check_dataset
from ftkit.data.tokens import count_chat_tokens


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    p = tmp_path / name
    p.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return p


def found(report, check: str) -> list[tuple]:
    """(line, row, column) of every issue of one check."""
    return [(i.line, i.row, i.column) for i in report.issues if i.check == check]


GOOD = "prompt,answer\n" + "".join(f"What is {i} + {i}?,{2 * i}\n" for i in range(250))


def test_clean_file_and_holdout_note(tmp_path):
    r = check_dataset(write(tmp_path, "train.csv", GOOD))
    assert r.ok and r.issues == [] and r.rows == {"train": 250}
    assert any("holds out 1%" in n and "2 of 250" in n for n in r.notes)
    assert "Dataset check OK: 0 errors, 0 warnings" in str(r)
    r = check_dataset(write(tmp_path, "t.csv", GOOD), write(tmp_path, "v.csv", "prompt,answer\nWhat is 1000?,1000\n"))
    assert r.ok and not any("holds out" in n for n in r.notes)


def test_file_problems(tmp_path):
    r = check_dataset(tmp_path / "missing.csv")
    assert not r.ok and r.issues[0].check == "file_not_found" and "missing.csv" in r.issues[0].message
    r = check_dataset(write(tmp_path, "data.txt", GOOD))  # right content, wrong extension: still checked
    assert [i.check for i in r.issues] == ["not_csv"] and "'.txt'" in r.issues[0].message
    assert r.rows == {"train": 250}
    r = check_dataset(write(tmp_path, "data.csv", '[{"prompt": "a", "answer": "b"}]'))
    assert found(r, "not_csv") == [(1, None, None)] and "JSON" in r.issues[0].message
    r = check_dataset(write(tmp_path, "book.csv", b"PK\x03\x04\x14\x00\x06\x00" + b"\x00" * 100))
    assert "ZIP archive" in r.issues[0].message
    r = check_dataset(write(tmp_path, "u16.csv", "prompt,answer\na,b\n".encode("utf-16")))
    assert "UTF-16" in r.issues[0].message
    r = check_dataset(write(tmp_path, "empty.csv", ""))
    assert [i.check for i in r.issues] == ["empty_file"]
    r = check_dataset(write(tmp_path, "header.csv", "prompt,answer\n"), write(tmp_path, "v.csv", GOOD))
    assert found(r, "no_rows") == [(1, None, None)]
    r = check_dataset(write(tmp_path, "tabs.csv", "prompt\tanswer\na\tb\n"))
    assert found(r, "wrong_delimiter") == [(1, None, None)] and "'\\t'" in r.issues[0].message


def test_not_utf8_reports_byte_offset_and_line(tmp_path):
    data = "prompt,answer\nCafé?,yes\n".encode("cp1252") + b"ok,\n"  # é is one byte 0xE9 at offset 17
    r = check_dataset(write(tmp_path, "latin1.csv", data))
    (bad,) = [i for i in r.issues if i.check == "not_utf8"]
    assert bad.line == 2 and "0xE9 at byte offset 17" in bad.message and "'é'" in bad.message
    assert found(r, "empty_answer") == [(3, 2, "answer")]  # the rest of the file is still checked


def test_structure_line_and_row_numbers(tmp_path):
    text = (
        "prompt,answer\n"  # line 1
        '"a prompt\n'  # line 2, row 1: a quoted value spanning two lines
        'on two lines",yes\n'  # line 3
        "a,b,c\n"  # line 4, row 2: three fields
        "\n"  # line 5: blank, not a row
        "x,\n"  # line 6, row 3: empty answer
        '"quoted"tail,no\n'  # line 7, row 4: text after the closing quote
        "fine,yes\n"  # line 8, row 5
        '"never closed,yes\n'  # line 9, row 6: the quote swallows the rest of the file
        "last,no\n"  # line 10
    )
    r = check_dataset(write(tmp_path, "bad.csv", text))
    assert found(r, "ragged_row") == [(4, 2, None)]
    assert found(r, "empty_answer") == [(6, 3, "answer")]
    assert found(r, "malformed_csv") == [(7, 4, None), (9, 6, None)]
    assert "text follows a closing double quote" in r.issues[2].message
    assert "never closed" in r.issues[3].message
    assert r.rows == {"train": 6}
    assert [i.line for i in r.issues] == sorted(i.line for i in r.issues)


def test_ragged_row_spanning_lines_hints_at_quote(tmp_path):
    r = check_dataset(write(tmp_path, "q.csv", 'prompt,answer\nok,yes\n"unbalanced,yes\nmore,no\nthird,"\n'))
    (issue,) = [i for i in r.issues if i.check == "ragged_row"]
    assert (issue.line, issue.row) == (3, 2) and "runs over lines 3-5" in issue.message


def test_missing_columns_suggest_names(tmp_path):
    r = check_dataset(write(tmp_path, "cols.csv", "Prompt,anwser\na,b\nc,d\n"))
    msgs = {i.column: i.message for i in r.issues if i.check == "missing_column"}
    assert "did you mean 'anwser'?" in msgs["answer"] and "did you mean 'Prompt'?" in msgs["prompt"]
    assert all(i.line == 1 and "'Prompt', 'anwser'" in i.allowed for i in r.issues if i.check == "missing_column")
    r = check_dataset(write(tmp_path, "c2.csv", "question,response\na,b\nc,d\n"), prompt_column="question",
                      answer_column="response")  # fmt: skip
    assert r.ok
    r = check_dataset(write(tmp_path, "c3.csv", "answer\nb\nd\n"), prompt_column=None)
    assert r.ok and any("answer-only" in n for n in r.notes)


def test_empty_values_duplicates_and_leakage(tmp_path):
    train = write(tmp_path, "t.csv", "prompt,answer\nq1,a1\n  ,a2\nq3, \nq1,a1\nq5,a5\n")
    val = write(tmp_path, "v.csv", "prompt,answer\nq5,a5\nq9,a9\n")
    r = check_dataset(train, val)
    assert found(r, "empty_prompt") == [(3, 2, "prompt")]
    assert found(r, "empty_answer") == [(4, 3, "answer")]
    assert found(r, "duplicate_row") == [(5, 4, None)] and "same as row 1 (line 2)" in r.issues[2].message
    (leak,) = [i for i in r.issues if i.check == "in_training"]
    assert (leak.file, leak.line, leak.row, leak.severity) == (str(val), 2, 1, "warning")
    assert "row 5 (line 6)" in leak.message
    assert len(r.errors) == 2 and len(r.warnings) == 2 and not r.ok


def test_warnings_alone_are_ok(tmp_path):
    rows = "".join(f"q{i},a{i}\n" for i in range(20))
    r = check_dataset(write(tmp_path, "t.csv", "prompt,answer\n" + rows + "q0,a0\n"))
    assert r.ok and [i.check for i in r.issues] == ["duplicate_row"]


def test_length_skew(tmp_path):
    rows = [f"question {i},short answer {i}" for i in range(40)]
    rows[17] = "question 17," + "very long " * 500
    r = check_dataset(write(tmp_path, "t.csv", "prompt,answer\n" + "\n".join(rows) + "\n"))
    (skew,) = [i for i in r.issues if i.check == "length_skew"]
    assert (skew.severity, skew.row, skew.line) == (
        "warning",
        18,
        19,
    ) and "1 rows are over 10×" in skew.message
    val = write(tmp_path, "v.csv", "prompt,answer\n" + "".join(f"q{i}," + "long " * 100 + "\n" for i in range(5)))
    r = check_dataset(write(tmp_path, "t2.csv", GOOD), val)
    assert [i.file for i in r.issues if i.check == "length_skew"] == [str(val)]


def test_all_problems_at_once_in_both_files(tmp_path):
    train = write(tmp_path, "t.csv", b"prompt,answer\nok,yes\n\xff,yes\n,no\nx,y,z\n")
    val = write(tmp_path, "v.csv", "prompt,anser\nq,a\n")
    r = check_dataset(train, val)
    assert {(i.file, i.check) for i in r.issues} == {
        (str(train), "not_utf8"),
        (str(train), "empty_prompt"),
        (str(train), "ragged_row"),
        (str(val), "missing_column"),
    }
    assert [i.file for i in r.issues] == [str(train)] * 3 + [str(val)]


def test_text_and_html_reports(tmp_path):
    rows = "".join(f"q{i},\n" for i in range(25))
    r = check_dataset(write(tmp_path, "t.csv", "prompt,answer\n" + rows))
    text = str(r)
    assert text.startswith("Dataset check NOT OK: 25 errors, 0 warnings")
    assert len(re.findall(r"^error .* empty answer", text, re.M)) == 20 and "… 5 more of empty_answer" in text
    assert len(re.findall(r"^error ", r.format(limit=None), re.M)) == 25
    html = r._repr_html_()
    assert html.count("<tr>") == 26 and "empty answer" in html
    assert len(r.to_frame()) == 25 and list(r.to_frame().row[:3]) == [1, 2, 3]


def test_cli_validate(tmp_path, capsys):
    from ftkit.cli import main

    bad = write(tmp_path, "bad.csv", "prompt,answer\nq,a\nq2,\n")
    assert main(["validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert re.search(r"^error\s+\S*bad\.csv\s+3\s+2\s+answer\s+''\s+empty answer", out, re.M)
    good = write(tmp_path, "good.csv", GOOD)
    assert main(["validate", str(good)]) == 0
    assert "Dataset check OK" in capsys.readouterr().out
    assert main(["validate", str(bad), "--json"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is False and data["issues"][0]["line"] == 3 and data["issues"][0]["row"] == 2
    alt = write(tmp_path, "alt.csv", "answer_text\nhello\nworld\n")
    assert main(["validate", str(alt), "--no-prompt", "--answer-column", "answer_text"]) == 0
    capsys.readouterr()
    assert main(["validate", str(good), "--model", str(tmp_path / "no-such-model")]) == 2
    assert "no-such-model" in capsys.readouterr().err


def independent_count(tok, prompt, answer):
    """Tokens of one row via apply_chat_template(tokenize=True), cut after the last EOS (or + EOS)."""
    msgs = ([{"role": "user", "content": prompt}] if prompt is not None else []) + [
        {"role": "assistant", "content": answer}
    ]
    ids = list(tok.apply_chat_template(msgs, tokenize=True)["input_ids"])
    eos = tok.eos_token_id
    return max(i for i, t in enumerate(ids) if t == eos) + 1 if eos in ids else len(ids) + 1


@pytest.fixture(scope="module")
def pubmedqa_csv(tmp_path_factory, pqal_path):
    from ftkit.data.pubmedqa.prepare import prepare_pubmedqa

    return prepare_pubmedqa(tmp_path_factory.mktemp("pq") / "d", source=pqal_path, max_train=60, max_validation=10)


def test_token_stats_match_independent_count(tiny_model_dir, pubmedqa_csv):
    import pandas as pd
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    r = check_dataset(pubmedqa_csv.train, pubmedqa_csv.validation, tokenizer=str(tiny_model_dir))
    assert r.ok and r.context_length == 2048  # the tiny model's max_position_embeddings
    for split, path in (("train", pubmedqa_csv.train), ("validation", pubmedqa_csv.validation)):
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
        counts = [independent_count(tok, p, a) for p, a in zip(df.prompt, df.answer, strict=True)]
        s = r.tokens[split]
        assert (s.rows, s.total, s.max) == (len(df), sum(counts), max(counts))
        assert s.mean == pytest.approx(sum(counts) / len(counts))
        assert s.worst[0] == (counts.index(max(counts)) + 1, max(counts))
    assert "tokens after the chat template" in str(r) and "p95" in str(r)
    # a context length between the shortest and longest row flags exactly the longer rows, by row number
    df = pd.read_csv(pubmedqa_csv.train, dtype=str, keep_default_na=False)
    counts = [independent_count(tok, p, a) for p, a in zip(df.prompt, df.answer, strict=True)]
    ctx = sorted(counts)[len(counts) // 2]
    r = check_dataset(pubmedqa_csv.train, tokenizer=tok, context_length=ctx)
    long_rows = [i + 1 for i, c in enumerate(counts) if c > ctx]
    assert [i.row for i in r.issues if i.check == "too_long"] == long_rows and not r.ok
    assert r.tokens["train"].over_context == len(long_rows)


def test_count_chat_tokens_answer_only_and_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    answers = ["yes. It works.", "no", "maybe, but " * 30]
    got = count_chat_tokens(tok, None, answers)
    assert got == [independent_count(tok, None, a) for a in answers]
    # the template ends "<|im_end|>\n": counting stops at <|im_end|> (EOS), the trailing newline is dropped
    text = tok.apply_chat_template([{"role": "assistant", "content": "no"}], tokenize=False)
    assert text.endswith("<|im_end|>\n")
    assert got[1] == len(tok(text, add_special_tokens=False)["input_ids"]) - 1
    tok.chat_template = None  # base models: prompt + blank line + answer, plus EOS
    n = count_chat_tokens(tok, ["Q?"], ["yes"])[0]
    assert n == len(tok("Q?\n\nyes")["input_ids"]) + 1
