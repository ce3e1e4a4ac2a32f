"""What the CSV reader (readers.read_csv) makes of each kind of file: every record with the
line it begins on and its fields exactly as written, and every file it cannot read refused in
one line that names the file, the line and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from training_scripts.readers import DataError, Invalid, Record, read_csv

HEADER = b"dialogue,summary\r\n"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # a byte-order mark is not part of the first column's name
        (
            b"\xef\xbb\xbf" + HEADER + b"A: hi,Hello.\r\n",
            [(2, {"dialogue": "A: hi", "summary": "Hello."})],
        ),
        # a quoted field keeps its line breaks as written, and the next record its own line
        (
            HEADER + b'"A: hi\r\nB: yo",Greeting.\r\nC: x,Y.\r\n',
            [
                (2, {"dialogue": "A: hi\r\nB: yo", "summary": "Greeting."}),
                (4, {"dialogue": "C: x", "summary": "Y."}),
            ],
        ),
        (b"", []),
        (HEADER, []),
        (HEADER + b"\r\n , \r\nA,B\r\n", [(4, {"dialogue": "A", "summary": "B"})]),  # blank rows
        (HEADER + b"A: hi\r\n", [(2, {"dialogue": "A: hi"})]),  # a short row lacks the rest
    ],
    ids=[
        "byte-order-mark",
        "line-breaks-in-a-field",
        "empty",
        "header-only",
        "blank-rows",
        "short-row",
    ],
)
def test_each_record_is_its_line_and_its_fields_as_written(
    tmp_path: Path, data: bytes, expected: list[tuple[int, dict[str, str]]]
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    assert list(read_csv(path)) == [Record(f"{path} line {n}", fields) for n, fields in expected]


def test_bad_bytes_and_extra_cells_are_that_records_problem(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(HEADER + b"A,\xff\r\nB,C,D\r\nE,F\r\n")
    assert list(read_csv(path)) == [
        Invalid(f"{path} line 2", "invalid_utf8", 'field "summary" is not valid UTF-8'),
        Invalid(f"{path} line 3", "extra_cells", "3 cells, but the header names 2"),
        Record(f"{path} line 4", {"dialogue": "E", "summary": "F"}),
    ]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (
            b'"dia"logue,summary\nA,B\n',
            "line 1: malformed CSV header (',' expected after '\"')",
        ),
        (
            b'dialogue,summary\nA,"B"x\n',
            "line 2: malformed CSV quoting (',' expected after '\"')",
        ),
        (
            b'dialogue,summary\nA,B\nC,"D\nE,F\n',
            "line 3: a quoted field opened in this row is never closed, so it would swallow every "
            'row after it; close the quote (a literal " is "")',
        ),
        (
            b"dialogue,summary,dialogue\nA,B,C\n",
            "line 1: column names ['dialogue'] repeat; give every column its own name",
        ),
    ],
    ids=["header-quoting", "row-quoting", "unclosed-quote", "repeated-column"],
)
def test_a_file_that_cannot_be_read_is_refused_naming_its_line(
    tmp_path: Path, data: bytes, message: str
) -> None:
    path = tmp_path / "data.csv"
    path.write_bytes(data)
    with pytest.raises(DataError) as raised:
        list(read_csv(path))
    assert str(raised.value) == f"{path} {message}"
