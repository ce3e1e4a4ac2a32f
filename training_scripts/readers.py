"""Reading a dataset's records: JSONL, CSV or Parquet files (a file or a folder of them) or a
Hugging Face dataset, each record kept with its location (file and line) or reported invalid with
the reason and the fix, so preprocess.py can account for every one.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__:  # imported as part of the training_scripts package
    from . import tasks
else:  # run as a file in the SageMaker job: sibling modules are top-level
    import tasks

SUPPORTED_SUFFIXES = {".jsonl": "jsonl", ".json": "jsonl", ".csv": "csv", ".parquet": "parquet"}
HF_PREFIX = "hf:"
CSV_FIELD_LIMIT = 16 * 2**20  # characters; Python's default, 128 KiB, refuses long transcripts


class DataError(ValueError):
    """Bad input data; the message names where and what to do."""


@dataclass(frozen=True, slots=True)
class Record:
    location: str  # "file line N", for error messages and the output's `source`
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Invalid:
    location: str
    reason: str
    message: str


@dataclass
class InputFile:
    path: str
    format: str
    sha256: str
    records: int = 0


def fix_hint(reason: str) -> str:
    return {
        "invalid_utf8": "re-encode the file as UTF-8",
        "invalid_json": "make each line one JSON object",
        "not_an_object": "make each line a JSON object with the input and target fields",
        "extra_cells": "quote fields that contain the delimiter",
        "unknown_label": "answer with one of the task's labels, or add the label to its spec",
    }.get(reason, "fix the record")


# Byte-order marks of the encodings a spreadsheet or editor may write instead of UTF-8.
_OTHER_ENCODINGS = {
    b"\xff\xfe\x00\x00": "UTF-32 (little-endian)",
    b"\x00\x00\xfe\xff": "UTF-32 (big-endian)",
    b"\xff\xfe": "UTF-16 (little-endian)",
    b"\xfe\xff": "UTF-16 (big-endian)",
}


def refuse_other_encodings(path: Path) -> None:
    """A UTF-16 or UTF-32 file is named for what it is, not read as UTF-8 garbage."""
    with path.open("rb") as handle:
        start = handle.read(4)
    for mark, encoding in _OTHER_ENCODINGS.items():
        if start.startswith(mark):
            raise DataError(f"{path}: {encoding} text; re-encode the file as UTF-8")


def read_jsonl(path: Path) -> Iterator[Record | Invalid]:
    refuse_other_encodings(path)
    with path.open("rb") as handle:
        # One line at a time: memory follows the longest record, not the file.
        for number, line in enumerate(handle, start=1):
            raw = line.removesuffix(b"\n")
            if number == 1:
                # A UTF-8 byte-order mark (editors on Windows write one) is not part of line
                # 1's record.
                raw = raw.removeprefix(b"\xef\xbb\xbf")
            if raw.strip():  # blank lines hold no record
                yield jsonl_record(f"{path} line {number}", raw)


class _DuplicateKeyError(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object whose every key is its own: `json` would keep a repeated key's last value
    without a word, so which text trains would depend on the order of the writer's keys."""
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        raise _DuplicateKeyError(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return value


def jsonl_record(location: str, raw: bytes) -> Record | Invalid:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return Invalid(
            location,
            "invalid_utf8",
            f"not valid UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1})",
        )
    del raw  # a long line is held once, not twice, while it is parsed
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys)
    except _DuplicateKeyError as err:
        return Invalid(
            location, "invalid_json", f"the key {err.args[0]!r} appears twice in one object"
        )
    except json.JSONDecodeError as err:
        return Invalid(
            location, "invalid_json", f"malformed JSON ({err.msg} at column {err.colno})"
        )
    except RecursionError:
        return Invalid(location, "invalid_json", "JSON nested too deeply to read")
    except ValueError as err:  # e.g. an integer of thousands of digits
        return Invalid(location, "invalid_json", f"unreadable JSON value ({err})")
    if not isinstance(value, dict):
        return Invalid(
            location, "not_an_object", f"expected a JSON object, got {type(value).__name__}"
        )
    return Record(location, value)


_SURROGATE = re.compile(r"[\udc80-\udcff]")


def read_csv(path: Path) -> Iterator[Record | Invalid]:
    refuse_other_encodings(path)
    # surrogateescape keeps bad bytes as markers, so one bad record does not hide the others
    # and quoted fields spanning several lines keep their own line numbers; utf-8-sig drops a
    # leading byte-order mark. Read as a stream: memory follows the longest row.
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as handle:
        yield from _csv_records(path, handle)


def _csv_records(path: Path, handle: Any) -> Iterator[Record | Invalid]:
    # strict: a quote opened and never closed is an error, not a field that swallows every
    # row after it.
    reader = csv.reader(handle, strict=True)
    csv.field_size_limit(CSV_FIELD_LIMIT)  # long dialogues are truncated later, not refused
    try:
        header = next(reader, None)
    except csv.Error as err:
        raise DataError(f"{path} line 1: malformed CSV header ({err})") from None
    if header is None:
        return
    repeated = sorted({name for name in header if header.count(name) > 1})
    if repeated:
        raise DataError(
            f"{path} line 1: column names {repeated} repeat; give every column its own name"
        )
    for line, row in _rows(reader, path):
        location = f"{path} line {line}"
        if not any(cell.strip() for cell in row):
            continue  # blank lines hold no record
        if len(row) > len(header):
            # More cells than columns: a field with an unquoted delimiter. Truncating would
            # silently lose what the extra cells hold.
            yield Invalid(
                location, "extra_cells", f"{len(row)} cells, but the header names {len(header)}"
            )
            continue
        fields = dict(zip(header, row, strict=False))  # a short row lacks its last fields
        bad = next((k for k, v in fields.items() if _SURROGATE.search(v)), None)
        if bad is not None:
            yield Invalid(location, "invalid_utf8", f'field "{bad}" is not valid UTF-8')
            continue
        yield Record(location, fields)


def _rows(reader: Any, path: Path) -> Iterator[tuple[int, list[str]]]:
    """The reader's rows with the line each begins on (a quoted field may span lines);
    malformed quoting stops the file there."""
    previous_end = reader.line_num
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as err:
            line = previous_end + 1
            if "unexpected end of data" in str(err):
                raise DataError(
                    f"{path} line {line}: a quoted field opened in this row is never closed, so "
                    'it would swallow every row after it; close the quote (a literal " is "")'
                ) from None
            raise DataError(f"{path} line {line}: malformed CSV quoting ({err})") from None
        yield previous_end + 1, row
        previous_end = reader.line_num


# Rows materialised at a time: a dictionary-encoded column stores one long text once, and
# each row that repeats it becomes its own Python string, so memory follows this many copies
# of the longest record, not the file's row count.
PARQUET_BATCH_ROWS = 64


def read_parquet(path: Path) -> Iterator[Record | Invalid]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        with pq.ParquetFile(path) as parquet:
            names = parquet.schema_arrow.names
            repeated = sorted({n for n in names if names.count(n) > 1})
            if repeated:
                raise DataError(
                    f"{path}: the column {repeated[0]!r} appears twice; give each column its "
                    "own name"
                )
            number = 0
            for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS):
                for row in batch.to_pylist():
                    number += 1
                    yield Record(f"{path} row {number}", row)
    except (pa.ArrowException, OSError) as err:
        raise DataError(f"{path}: not a readable Parquet file ({err}); write it again") from None


READERS: dict[str, Callable[[Path], Iterator[Record | Invalid]]] = {
    "jsonl": read_jsonl,
    "csv": read_csv,
    "parquet": read_parquet,
}


# Compressed data is refused by name, never passed over: a `.jsonl.gz` beside the data would
# otherwise be left out of the run (and of its manifest) without a word.
COMPRESSED_SUFFIXES = frozenset({".gz", ".bz2", ".xz", ".zst", ".zip", ".7z", ".tgz", ".lz4"})


def refuse_compressed(path: Path) -> None:
    if path.suffix.lower() in COMPRESSED_SUFFIXES:
        raise DataError(
            f"{path}: compressed; preprocess reads uncompressed "
            f"{'/'.join(sorted(SUPPORTED_SUFFIXES))} files: decompress it, or move it out of "
            "the input"
        )


def refuse_undecodable_name(path: Path) -> None:
    """A file name that is not UTF-8 cannot be written into the manifest that accounts for it."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(
            f"{ascii(str(path))[1:-1]}: the file name is not valid UTF-8; rename it"
        ) from None


def discover_files(input_path: Path, *, outside: Path | None = None) -> list[Path]:
    """The data files of --input (a file, or every data file under a folder), never one
    under `outside` (the run's output folder: its splits are no input)."""
    if input_path.is_file():
        refuse_compressed(input_path)
        refuse_undecodable_name(input_path)
        if input_path.suffix.lower() not in SUPPORTED_SUFFIXES:
            raise DataError(
                f"{input_path}: unsupported file type; use one of {sorted(SUPPORTED_SUFFIXES)}"
            )
        return [input_path]
    if input_path.is_dir():
        excluded = outside.resolve() if outside is not None else None
        if excluded == input_path.resolve():
            raise DataError(
                f"{input_path}: the input folder is also --output-dir; write the splits elsewhere"
            )
        if excluded is not None and not excluded.is_relative_to(input_path.resolve()):
            excluded = None  # not inside the input: nothing of it can be read as input
        candidates = [
            p
            for p in sorted(input_path.rglob("*"))
            if p.is_file()
            # A task spec published with the data (task.json at the top) is no data file.
            and p != input_path / tasks.TASK_SPEC_FILE
            and not (excluded and p.resolve().is_relative_to(excluded))
        ]
        for path in candidates:
            refuse_compressed(path)
        files = [p for p in candidates if p.suffix.lower() in SUPPORTED_SUFFIXES]
        for path in files:
            refuse_undecodable_name(path)
        if not files:
            raise DataError(
                f"{input_path}: no {'/'.join(sorted(SUPPORTED_SUFFIXES))} files in this folder"
            )
        return files
    if input_path.exists():
        raise DataError(
            f"{input_path}: neither a regular file nor a folder (a pipe or a device?); pass "
            "--input with a data file or folder"
        )
    raise DataError(
        f"{input_path}: no such file or folder; pass --input with a data file or folder"
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_files(files: list[Path]) -> tuple[list[InputFile], Iterator[Record | Invalid]]:
    """Each file's entry for the manifest, and its records as a stream (read once, never held
    all at once); an entry's `records` is complete once the stream is."""
    inputs = [
        InputFile(path=str(path), format=SUPPORTED_SUFFIXES[path.suffix.lower()], sha256="")
        for path in files
    ]

    def records() -> Iterator[Record | Invalid]:
        for path, entry in zip(files, inputs, strict=True):
            try:
                entry.sha256 = file_sha256(path)
                for item in READERS[entry.format](path):
                    entry.records += 1
                    yield item
            except OSError as err:
                raise DataError(
                    f"{path}: cannot read it ({err.strerror}); check its permissions"
                ) from None

    return inputs, records()


def read_hub_dataset(
    dataset_id: str, split: str
) -> tuple[list[InputFile], Iterator[Record | Invalid]]:
    from datasets import load_dataset

    dataset = load_dataset(dataset_id, split=split)
    entry = InputFile(
        path=f"{HF_PREFIX}{dataset_id}[{split}]",
        format="huggingface",
        sha256=getattr(dataset, "_fingerprint", ""),
        records=len(dataset),
    )
    records = (
        Record(f"{HF_PREFIX}{dataset_id}[{split}] record {i + 1}", row)
        for i, row in enumerate(dataset)
    )
    return [entry], records
