"""Read a CSV file the way the fine-tuning service does, reporting structural problems by line.

Uses the :mod:`csv` module (strict mode) rather than pandas, whose parser errors name neither the line where
a bad record starts nor what is wrong with it. The file must be UTF-8 (a byte order mark is accepted); invalid
bytes are reported with their byte offset and the rest of the file is still read, so every problem shows up at
once.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, field
from pathlib import Path

from ftkit.data.report import Issue, excerpt

_MAX_UTF8_ISSUES = 10
_BAD_BYTES = re.compile("[\udc80-\udcff]+")  # invalid UTF-8 bytes after decoding with surrogateescape


@dataclass
class CsvTable:
    """The well-formed records of a CSV file, with where each one is."""

    name: str  # the file as the user named it
    header: list[str]
    records: list[tuple[int, int, list[str]]] = field(default_factory=list)  # (row, line, fields)
    n_rows: int = 0  # all data records, malformed ones included

    def value(self, record: tuple[int, int, list[str]], column: str) -> str:
        return record[2][self.header.index(column)]


def read_csv(path: Path, name: str, issues: list[Issue]) -> CsvTable | None:
    """Parse one file; structural problems go to ``issues``. None when it cannot be read as CSV at all."""
    text = _read_text(path, name, issues)
    if text is None:
        return None
    return _parse(text, name, issues)


def _read_text(path: Path, name: str, issues: list[Issue]) -> str | None:
    """The file as text (invalid UTF-8 reported and replaced); None when it is missing, binary, empty or JSON."""

    def err(check, message, allowed=None, **kw):
        issues.append(Issue("error", check, name, message, allowed=allowed, **kw))

    if not path.exists():
        err("file_not_found", f"file not found: {path.resolve()}", "an existing CSV file")
        return None
    if path.is_dir():
        err("not_a_file", "is a folder, not a file", "a CSV file")
        return None
    if path.suffix.lower() != ".csv":
        err(
            "not_csv",
            f"file name ends in {path.suffix or '(no extension)'!r}",
            "a .csv file (the service takes CSV only)",
        )
    data = path.read_bytes()
    kind = _binary_kind(data)
    if kind:
        err(
            "not_csv",
            f"the content is {kind}, not CSV text",
            "comma-separated UTF-8 text; export the data as CSV",
        )
        return None
    if data.startswith(b"\xef\xbb\xbf"):  # a UTF-8 byte order mark (Excel writes one) is harmless
        data = data[3:]
    text = data.decode("utf-8", errors="surrogateescape")
    text = _check_utf8(text, name, issues)
    if not text.strip():
        err("empty_file", "the file is empty", "a header line and at least one data row")
        return None
    if text.lstrip()[:1] in ("{", "["):
        err(
            "not_csv",
            "the content looks like JSON, not CSV",
            "comma-separated text with a header line",
            line=1,
            value=excerpt(text.lstrip(), 40),
        )
        return None
    return text


def _parse(text: str, name: str, issues: list[Issue]) -> CsvTable | None:
    """The well-formed records of CSV text; malformed records and ragged rows go to ``issues``."""

    def err(check, message, allowed=None, **kw):
        issues.append(Issue("error", check, name, message, allowed=allowed, **kw))

    csv.field_size_limit(2**31 - 1)  # the default 128 KiB per value is too small for long documents
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    table: CsvTable | None = None
    prev_line, row = 0, 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            start = prev_line + 1
            prev_line = reader.line_num
            row += table is not None
            _malformed(e, name, start, row if table is not None else None, issues)
            continue
        start, prev_line = prev_line + 1, reader.line_num
        if not fields:  # a blank line: pandas skips these too
            continue
        if table is None:
            table = _header(fields, name, issues)
            if table is None:
                return None
            continue
        row += 1
        if len(fields) != len(table.header):
            spans = (
                f" (the record runs over lines {start}-{prev_line}: check for an unbalanced double quote)"
                if prev_line > start
                else ""
            )
            err(
                "ragged_row",
                f"{len(fields)} fields, but the header has {len(table.header)}{spans}",
                f"{len(table.header)} comma-separated fields; quote values that contain commas",
                line=start,
                row=row,
                value=excerpt(",".join(fields)),
            )
            continue
        table.records.append((row, start, fields))
    if table is None:
        err("empty_file", "no header line", "a header line and at least one data row")
        return None
    table.n_rows = row
    if row == 0:
        err("no_rows", "the file has a header but no data rows", "at least one data row", line=1)
    return table


def _binary_kind(data: bytes) -> str | None:
    head = data[:8192]
    if head.startswith(b"PK\x03\x04"):
        return "a ZIP archive (an Excel .xlsx workbook?)"
    if head.startswith(b"PAR1"):
        return "a Parquet file"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "UTF-16 text (save it as UTF-8)"
    if b"\x00" in head:
        return f"binary data (a NUL byte at byte offset {head.index(0)})"
    return None


def _check_utf8(text: str, name: str, issues: list[Issue]) -> str:
    """Report invalid UTF-8 bytes with byte offset and line; return the text with them replaced by U+FFFD."""
    bad = list(_BAD_BYTES.finditer(text))
    if not bad:
        return text
    offset, last = 0, 0
    for n, m in enumerate(bad):
        offset += len(text[last : m.start()].encode("utf-8", "surrogateescape"))
        last = m.start()
        if n < _MAX_UTF8_ISSUES:
            raw = m.group().encode("utf-8", "surrogateescape")
            guess = raw.decode("cp1252", errors="replace")
            issues.append(
                Issue(
                    "error",
                    "not_utf8",
                    name,
                    f"byte {' '.join(f'0x{b:02X}' for b in raw)} at byte offset {offset} is not valid UTF-8 "
                    f"(in Windows-1252 it would be {guess!r})",
                    line=text.count("\n", 0, m.start()) + 1,
                    value=excerpt(_line_at(text, m.start()).replace(m.group(), "\ufffd")),
                    allowed="UTF-8 text: re-save the file as UTF-8",
                )
            )
    if len(bad) > _MAX_UTF8_ISSUES:
        more = bad[_MAX_UTF8_ISSUES:]
        lines = sorted({text.count("\n", 0, m.start()) + 1 for m in more})
        issues.append(
            Issue(
                "error",
                "not_utf8",
                name,
                f"{len(more)} more invalid UTF-8 byte sequences, on lines "
                f"{', '.join(map(str, lines[:20]))}{' …' if len(lines) > 20 else ''}",
                allowed="UTF-8 text: re-save the file as UTF-8",
            )
        )
    return _BAD_BYTES.sub("\ufffd", text)


def _line_at(text: str, pos: int) -> str:
    return text[text.rfind("\n", 0, pos) + 1 : (text.find("\n", pos) + 1 or len(text) + 1) - 1]


def _malformed(e: csv.Error, name: str, line: int, row: int | None, issues: list[Issue]) -> None:
    msg = str(e)
    if "unexpected end of data" in msg or "EOF" in msg:
        text = "a double quote opened in this record is never closed: the rest of the file was read as one value"
        allowed = 'balanced double quotes; a quote inside a quoted value is written twice ("")'
    elif "expected after" in msg:
        text = "text follows a closing double quote"
        allowed = 'a value fully quoted ("…") or not quoted; a quote inside a quoted value is written twice ("")'
    else:
        text, allowed = f"malformed CSV: {msg}", "RFC 4180 CSV"
    issues.append(Issue("error", "malformed_csv", name, text, line=line, row=row, allowed=allowed))


def _header(fields: list[str], name: str, issues: list[Issue]) -> CsvTable | None:
    if len(fields) == 1 and any(d in fields[0] for d in ("\t", ";", "|")):
        sep = next(d for d in ("\t", ";", "|") if d in fields[0])
        issues.append(
            Issue(
                "error",
                "wrong_delimiter",
                name,
                f"the header is separated by {sep!r}, not commas",
                line=1,
                value=excerpt(fields[0]),
                allowed="comma-separated values",
            )
        )
        return None
    seen: set[str] = set()
    for col in fields:
        if col in seen:
            issues.append(
                Issue(
                    "error",
                    "duplicate_column",
                    name,
                    f"column {col!r} appears more than once in the header",
                    line=1,
                    column=col,
                    allowed="unique column names",
                )
            )
        seen.add(col)
        if not col.strip():
            issues.append(
                Issue(
                    "warning",
                    "unnamed_column",
                    name,
                    "a column has no name (a saved pandas index?)",
                    line=1,
                    allowed="a name for every column",
                )
            )
    return CsvTable(name, fields)
