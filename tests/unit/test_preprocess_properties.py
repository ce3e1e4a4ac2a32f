"""preprocess.py on generated hostile files: whatever the bytes, it ends with exit code 0 or 2,
says why in one line when it refuses, and in skip mode accounts for every record (in = out +
dropped) and writes each kept record's fields exactly as the documented normalization makes
them (`normalize_text`: NFC, single spaces, no control characters or blank lines)."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training_scripts import contracts, preprocess
from training_scripts.preprocess import normalize_text

# Text as users' files hold it: any character but lone surrogates (those are generated on
# purpose below), with whitespace, control characters and the line breaks of dialogue turns.
TEXT = st.text(
    alphabet=st.one_of(
        st.characters(blacklist_categories=("Cs",)),
        st.sampled_from(" \t\r\n\x00\x0b\x1f\u00a0\u3000\u0301<|>\"',;{}[]\\"),
    ),
    max_size=24,
)
BUDGET = "1000000"  # no truncation: kept fields are their normalized inputs, whole


@dataclass(frozen=True)
class Line:
    """One generated line of a file and, if it is a record preprocess must keep, its fields
    after normalization."""

    raw: bytes
    kept: tuple[str, str] | None  # (input, target) when valid
    is_record: bool = True  # False for a blank line


def pair_or_none(dialogue: object, summary: object) -> tuple[str, str] | None:
    if not (isinstance(dialogue, str) and isinstance(summary, str)):
        return None
    pair = normalize_text(dialogue), normalize_text(summary)
    return pair if all(pair) else None


@st.composite
def jsonl_line(draw: st.DrawFn) -> Line:
    kind = draw(
        st.sampled_from(
            ["valid", "valid", "valid", "extra", "missing", "not_text", "not_object",
             "garbage", "truncated", "nested", "bigint", "surrogate", "blank"]
        )
    )  # fmt: skip
    dialogue, summary = draw(TEXT), draw(TEXT)
    if kind == "valid":
        return Line(
            json.dumps({"dialogue": dialogue, "summary": summary}).encode(),
            pair_or_none(dialogue, summary),
        )
    if kind == "extra":
        record = {"id": draw(TEXT), "summary": summary, "other": [1], "dialogue": dialogue}
        return Line(
            json.dumps(record, ensure_ascii=False).encode(), pair_or_none(dialogue, summary)
        )
    if kind == "missing":
        return Line(json.dumps({"dialogue": dialogue}).encode(), None)
    if kind == "not_text":
        value = draw(st.one_of(st.none(), st.integers(), st.lists(st.integers(), max_size=2)))
        return Line(json.dumps({"dialogue": value, "summary": summary}).encode(), None)
    if kind == "not_object":
        value = draw(st.one_of(st.integers(), st.lists(TEXT, max_size=2), TEXT))
        return Line(json.dumps(value).encode(), None)
    if kind == "garbage":
        raw = draw(st.binary(min_size=1, max_size=30)).replace(b"\n", b" ")
        return Line(raw, None, is_record=bool(raw.strip()))
    if kind == "truncated":
        whole = json.dumps({"dialogue": dialogue, "summary": summary}).encode()
        return Line(whole[: draw(st.integers(1, len(whole) - 1))], None)
    if kind == "nested":
        depth = draw(st.sampled_from([50, 5000, 200000]))
        raw = b'{"dialogue": ' + b"[" * depth + b"]" * depth + b', "summary": "s"}'
        return Line(raw, None)
    if kind == "bigint":
        return Line(b'{"dialogue": ' + b"7" * 5000 + b', "summary": "s"}', None)
    if kind == "surrogate":
        return Line(b'{"dialogue": "a\\ud800b", "summary": "s"}', None)
    return Line(draw(st.sampled_from([b"", b"   ", b"\t", b"\r"])), None, is_record=False)


@st.composite
def csv_line(draw: st.DrawFn) -> Line:
    kind = draw(
        st.sampled_from(["valid", "valid", "valid", "extra_cells", "short", "bad_bytes", "blank"])
    )
    dialogue, summary = draw(TEXT), draw(TEXT)

    def encoded(cells: list[str]) -> bytes:
        out = io.StringIO(newline="")
        csv.writer(out).writerow(cells)  # quotes a field holding a line break, \r included
        return out.getvalue().removesuffix("\r\n").encode("utf-8", errors="surrogateescape")

    cells = {
        "valid": [dialogue, summary],
        "extra_cells": [dialogue, summary, draw(TEXT)],
        "short": [dialogue],
        "bad_bytes": [dialogue + "\udcff", summary],
        "blank": [draw(st.sampled_from(["", " ", "\t"])), ""],
    }[kind]
    # A row is a record unless every cell is blank ("blank lines hold no record").
    is_record = any(cell.strip() for cell in cells)
    kept = pair_or_none(dialogue, summary) if kind == "valid" else None
    return Line(encoded(cells), kept, is_record=is_record)


def run_main(path: Path, out: Path, *, skip: bool) -> tuple[int, list[str]]:
    """preprocess's command line, in this process: its exit code and stderr lines."""
    argv = ["--input", str(path), "--output-dir", str(out), "--max-input-tokens", BUDGET]
    if skip:
        argv.append("--skip-invalid")
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = preprocess.main(argv)  # an exception here is a traceback: the test fails
    return code, stderr.getvalue().splitlines()


def check(name: str, lines: list[Line], bom: bool, skip: bool) -> None:
    body = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(line.raw for line in lines) + b"\n"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_bytes(body)
        code, stderr = run_main(path, Path(tmp) / "out", skip=skip)
        assert code in (0, 2), (code, stderr)
        if code == 2:
            assert len(stderr) == 1 and stderr[0].startswith("preprocess: error: "), stderr
            return
        manifest = contracts.MANIFEST.read(Path(tmp) / "out")
        records_in = sum(line.is_record for line in lines)
        kept = sum(manifest["records_out"].values())
        assert manifest["records_in"] == records_in
        assert records_in == kept + sum(manifest["dropped"].values())
        expected = {line.kept for line in lines if line.kept}
        assert kept == len(expected)  # every valid record, once (exact duplicates dropped)
        written = set()
        for split in manifest["splits"].values():
            # As training reads them (U+2028 or U+0085 in a field is no line break).
            for record in contracts.read_split_rows(Path(tmp) / "out" / split["file"]):
                written.add((record[contracts.INPUT_KEY], record[contracts.TARGET_KEY]))
        assert written == expected


HOSTILE = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@HOSTILE
@given(lines=st.lists(jsonl_line(), max_size=25), bom=st.booleans(), skip=st.booleans())
def test_hostile_jsonl_is_accounted_for_or_refused_in_one_line(
    lines: list[Line], bom: bool, skip: bool
) -> None:
    check("data.jsonl", lines, bom, skip)


@HOSTILE
@given(lines=st.lists(csv_line(), max_size=25), bom=st.booleans(), skip=st.booleans())
def test_hostile_csv_is_accounted_for_or_refused_in_one_line(
    lines: list[Line], bom: bool, skip: bool
) -> None:
    check("data.csv", [Line(b"dialogue,summary", None, is_record=False), *lines], bom, skip)
