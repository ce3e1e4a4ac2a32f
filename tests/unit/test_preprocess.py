"""preprocess.py: validation errors name file, line and field; every record is accounted for;
splits are deterministic and disjoint."""

from __future__ import annotations

import json
import re
import unicodedata
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training_scripts import preprocess, readers
from training_scripts.preprocess import (
    Example,
    PreprocessArguments,
    normalize_text,
    split_examples,
)
from training_scripts.readers import DataError
from training_scripts.tasks import DEFAULT_TASK, resolve_task_spec

DEFAULT = resolve_task_spec(DEFAULT_TASK)


def good(i: int) -> dict[str, str]:
    return {
        "dialogue": f"#Person1#: Hello number {i}.\n#Person2#: Hi there {i}.",
        "summary": f"They greet {i}.",
    }


def jsonl_bytes(*lines: str | bytes) -> bytes:
    return b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines) + b"\n"


def run(tmp_path: Path, data: bytes, name: str = "data.jsonl", **kwargs) -> dict:
    source = tmp_path / name
    source.write_bytes(data)
    return preprocess.run(
        PreprocessArguments(input=str(source), output_dir=str(tmp_path / "out"), **kwargs)
    )


def assert_accounted(manifest: dict) -> None:
    assert manifest["records_in"] == sum(manifest["records_out"].values()) + sum(
        manifest["dropped"].values()
    )


def test_malformed_json_stops_with_file_and_line(tmp_path: Path) -> None:
    data = jsonl_bytes(json.dumps(good(1)), json.dumps(good(2)), '{"dialogue": "x", "summary": ')
    with pytest.raises(DataError, match=r"data\.jsonl line 3: malformed JSON .*--skip-invalid"):
        run(tmp_path, data)


def test_bad_utf8_stops_with_file_line_and_byte(tmp_path: Path) -> None:
    data = jsonl_bytes(json.dumps(good(1)), b'{"dialogue": "caf\xe9", "summary": "s"}')
    with pytest.raises(DataError, match=r"data\.jsonl line 2: not valid UTF-8 \(byte 0xe9"):
        run(tmp_path, data)


@pytest.mark.parametrize(
    ("record", "message"),
    [
        ({"dialogue": "hello"}, r'line 2: field "summary" is missing'),
        ({"dialogue": "  \n\t ", "summary": "s"}, r'line 2: field "dialogue" is empty'),
        ({"dialogue": "hello", "summary": ""}, r'line 2: field "summary" is empty'),
        ({"dialogue": 42, "summary": "s"}, r'line 2: field "dialogue" must be text'),
        (
            {"text": "hello", "summary": "s"},
            r'field "dialogue" is missing \(fields present: summary, text\); task '
            r"dialogue-summary's template names it: rename the data's field or describe "
            r"your fields in a task spec \(--task-spec\)",
        ),
    ],
)
def test_missing_or_empty_field_names_the_field(tmp_path: Path, record: dict, message: str) -> None:
    with pytest.raises(DataError, match=message):
        run(tmp_path, jsonl_bytes(json.dumps(good(1)), json.dumps(record)))


def test_skip_invalid_counts_every_reason(tmp_path: Path) -> None:
    data = jsonl_bytes(
        *(json.dumps(good(i)) for i in range(10)),
        "{broken",
        b'{"dialogue": "\xff", "summary": "s"}',
        json.dumps({"dialogue": "only"}),
        json.dumps({"dialogue": "", "summary": "s"}),
        json.dumps([1, 2]),
        json.dumps({"dialogue": None, "summary": "s"}),
        json.dumps(good(3)),  # exact duplicate
        json.dumps(
            {**good(4), "dialogue": good(4)["dialogue"] + "   "}
        ),  # duplicate after normalization
        "",  # blank line: no record
    )
    manifest = run(tmp_path, data, skip_invalid=True)
    assert manifest["records_in"] == 18
    assert sum(manifest["records_out"].values()) == 10
    assert manifest["dropped"] == {
        "invalid_utf8": 1,
        "invalid_json": 1,
        "not_an_object": 1,
        "extra_cells": 0,
        "missing_field": 2,
        "not_text": 0,
        "empty_field": 1,
        "unknown_label": 0,  # a label task's reason (test_tasks.py)
        "duplicate": 2,
    }
    assert_accounted(manifest)


def test_duplicates_are_dropped_even_in_strict_mode(tmp_path: Path) -> None:
    manifest = run(tmp_path, jsonl_bytes(*(json.dumps(good(i % 5)) for i in range(12))))
    assert manifest["dropped"]["duplicate"] == 7
    assert sum(manifest["records_out"].values()) == 5
    assert_accounted(manifest)


def test_same_dialogue_with_two_summaries_stays_in_one_split(tmp_path: Path) -> None:
    rows = [good(i) for i in range(30)] + [{**good(7), "summary": "Another reference."}]
    manifest = run(tmp_path, jsonl_bytes(*(json.dumps(r) for r in rows)))
    assert manifest["dropped"]["duplicate"] == 0
    homes = [
        split
        for split in ("train", "validation", "test")
        for line in (tmp_path / "out" / split / "data.jsonl").read_text().splitlines()
        if "Hello number 7." in json.loads(line)["input"]
    ]
    assert len(homes) == 2 and len(set(homes)) == 1


def test_over_long_inputs_are_truncated_and_counted(tmp_path: Path) -> None:
    long_dialogue = "#Person1#: " + " ".join(f"word{i}" for i in range(50))
    rows = [good(i) for i in range(5)] + [{"dialogue": long_dialogue, "summary": "Long."}]
    manifest = run(tmp_path, jsonl_bytes(*(json.dumps(r) for r in rows)), max_input_tokens=20)
    assert manifest["truncated_inputs"] == 1
    assert manifest["token_counter"] == "whitespace"
    outputs = [
        json.loads(line)
        for split in ("train", "validation", "test")
        for line in (tmp_path / "out" / split / "data.jsonl").read_text().splitlines()
    ]
    cut = next(r for r in outputs if r["target"] == "Long.")
    assert len(cut["input"].split()) == 20 and cut["input"].endswith("word18")


def test_token_budget_uses_the_model_tokenizer(tmp_path: Path, tiny_causal: Path) -> None:
    from transformers import AutoTokenizer

    long_dialogue = "#Person1#: " + " ".join(
        f"I would like to book a table number {i}." for i in range(40)
    )
    rows = [good(i) for i in range(5)] + [{"dialogue": long_dialogue, "summary": "Long."}]
    manifest = run(
        tmp_path,
        jsonl_bytes(*(json.dumps(r) for r in rows)),
        max_input_tokens=64,
        tokenizer=str(tiny_causal),
    )
    assert manifest["truncated_inputs"] == 1 and manifest["token_counter"].startswith("tokenizer:")
    tokenizer = AutoTokenizer.from_pretrained(tiny_causal)
    outputs = [
        json.loads(line)
        for split in ("train", "validation", "test")
        for line in (tmp_path / "out" / split / "data.jsonl").read_text().splitlines()
    ]
    cut = next(r for r in outputs if r["target"] == "Long.")
    assert len(tokenizer(cut["input"], add_special_tokens=False)["input_ids"]) <= 64
    assert long_dialogue.startswith(cut["input"])


def test_empty_input_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="holds no records"):
        run(tmp_path, b"")
    with pytest.raises(DataError, match="holds no records"):
        run(tmp_path, b"\n\n  \n")


def test_all_invalid_is_an_error_even_when_skipping(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="none of the 2 records is valid"):
        run(tmp_path, jsonl_bytes("{bad", json.dumps({"x": 1})), skip_invalid=True)


def test_missing_input_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file or folder"):
        preprocess.run(
            PreprocessArguments(
                input=str(tmp_path / "nope.jsonl"), output_dir=str(tmp_path / "out")
            )
        )


def test_csv_with_multiline_fields_custom_names_and_bad_bytes(tmp_path: Path) -> None:
    header = b"conversation,abstract\n"
    rows = b"".join(
        f'"#Person1#: hi {i}\n#Person2#: hello {i}",They greet {i}.\n'.encode() for i in range(6)
    )
    bad = b'"#Person1#: caf\xe9",Bad bytes.\n'
    (tmp_path / "data.csv").write_bytes(header + rows + bad)
    spec = tmp_path / "abstracts.json"
    spec.write_text(
        json.dumps(
            {"name": "abstracts", "format": "fields", "template": "Abstract:\n{conversation}",
             "target_field": "abstract"}
        )
    )  # fmt: skip
    args = dict(
        input=str(tmp_path / "data.csv"), output_dir=str(tmp_path / "out"), task_spec=str(spec)
    )
    with pytest.raises(
        DataError, match=r'data\.csv line 14: field "conversation" is not valid UTF-8'
    ):
        preprocess.run(PreprocessArguments(**args))
    manifest = preprocess.run(PreprocessArguments(**args, skip_invalid=True))
    assert manifest["records_in"] == 7 and manifest["dropped"]["invalid_utf8"] == 1
    assert sum(manifest["records_out"].values()) == 6
    train = [
        json.loads(line) for line in (tmp_path / "out/train/data.jsonl").read_text().splitlines()
    ]
    assert all("\n#Person2#:" in r["input"] for r in train)


def test_parquet_and_folder_input(tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.Table.from_pylist([good(i) for i in range(8)]), folder / "a.parquet")
    (folder / "b.jsonl").write_text("".join(json.dumps(good(i)) + "\n" for i in range(8, 12)))
    (folder / "notes.txt").write_text("ignored: not a data file")
    manifest = preprocess.run(
        PreprocessArguments(input=str(folder), output_dir=str(tmp_path / "out"))
    )
    assert [Path(i["path"]).name for i in manifest["inputs"]] == ["a.parquet", "b.jsonl"]
    assert manifest["records_in"] == 12 and sum(manifest["records_out"].values()) == 12
    assert all(len(i["sha256"]) == 64 for i in manifest["inputs"])


def test_parquet_missing_column_names_the_row(tmp_path: Path) -> None:
    pq.write_table(pa.Table.from_pylist([{"dialogue": "a"}]), tmp_path / "x.parquet")
    with pytest.raises(DataError, match=r'x\.parquet row 1: field "summary" is missing'):
        preprocess.run(
            PreprocessArguments(input=str(tmp_path / "x.parquet"), output_dir=str(tmp_path / "out"))
        )


def test_normalize_text_keeps_turns_and_drops_noise() -> None:
    raw = "  #Person1#:\tHello\u00a0 there \r\n\r\n#Person2#: Cafe\u0301\x07 ok  "
    assert normalize_text(raw) == "#Person1#: Hello there\n#Person2#: Caf\u00e9 ok"


REFERENCE_SPACES = re.compile(r"[ \t\u00a0\u2000-\u200b\u3000]+")


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet=st.one_of(st.characters(), st.sampled_from(" \t\r\n\u00a0\u2003\u3000\x0b")))
)
def test_normalize_text_is_the_documented_rule(raw: str) -> None:
    """The fast path (runs that already are one space are not rewritten) changes nothing:
    every run of spaces becomes one space, as the rule says."""
    text = unicodedata.normalize("NFC", raw).replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[\x00-\x08\x0b-\x1f\x7f]", " ", text)
    lines = (REFERENCE_SPACES.sub(" ", line).strip() for line in text.split("\n"))
    assert normalize_text(raw) == "\n".join(line for line in lines if line)


def test_manifest_describes_the_bundled_sample(tmp_path: Path) -> None:
    from tests.conftest import REPO

    manifest = preprocess.run(
        PreprocessArguments(
            input=str(REPO / "data/sample/dialogues.jsonl"), output_dir=str(tmp_path)
        )
    )
    assert manifest["records_out"]["train"] >= 300 and manifest["records_out"]["test"] >= 60
    assert_accounted(manifest)
    for split, info in manifest["splits"].items():
        assert (tmp_path / info["file"]).is_file() and info["records"] == manifest["records_out"][
            split
        ]


# --- property: the split is a deterministic partition --------------------------------------

texts = st.text(
    alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12
)
examples_strategy = st.lists(st.tuples(texts, texts), min_size=1, max_size=60).map(
    lambda pairs: [
        Example(id=str(i), input=a, target=b, source=f"f line {i}")
        for i, (a, b) in enumerate(pairs)
    ]
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    examples=examples_strategy,
    seed=st.integers(0, 2**32),
    order_seed=st.randoms(use_true_random=False),
)
def test_split_is_deterministic_and_a_partition(
    examples: list[Example], seed: int, order_seed
) -> None:
    try:
        first = split_examples(examples, seed=seed, validation_fraction=0.1, test_fraction=0.2)
    except DataError:
        assert len({e.input for e in examples}) < 3  # too few dialogues to split
        return
    shuffled = list(examples)
    order_seed.shuffle(shuffled)
    again = split_examples(shuffled, seed=seed, validation_fraction=0.1, test_fraction=0.2)
    assert first == again  # same seed, same split, whatever the input order
    ids = [e.id for rows in first.values() for e in rows]
    assert sorted(ids) == sorted(e.id for e in examples)  # nothing lost, nothing twice
    homes: dict[str, set[str]] = {}
    for name, rows in first.items():
        for e in rows:
            homes.setdefault(e.input, set()).add(name)
    assert all(len(h) == 1 for h in homes.values())  # a dialogue never straddles splits


def dialogues(count: int) -> list[Example]:
    return [
        Example(id=str(i), input=f"dialogue {i}", target=f"summary {i}", source=f"f line {i}")
        for i in range(count)
    ]


def test_another_seed_gives_another_split_of_the_same_sizes() -> None:
    examples = dialogues(40)
    first = split_examples(examples, seed=1, validation_fraction=0.1, test_fraction=0.2)
    other = split_examples(examples, seed=2, validation_fraction=0.1, test_fraction=0.2)
    assert {k: len(v) for k, v in first.items()} == {"train": 28, "validation": 4, "test": 8}
    assert {k: len(v) for k, v in other.items()} == {k: len(v) for k, v in first.items()}
    assert {e.id for e in first["test"]} != {e.id for e in other["test"]}


@pytest.mark.parametrize("count", [3, 4, 5, 9])
def test_every_requested_split_gets_a_dialogue_once_there_are_three(count: int) -> None:
    """Fractions that round to nothing on a small dataset still leave one dialogue in each
    requested split (an empty test split would make evaluation score nothing)."""
    split = split_examples(dialogues(count), seed=0, validation_fraction=0.1, test_fraction=0.1)
    assert len(split["validation"]) == 1 and len(split["test"]) == 1
    assert len(split["train"]) == count - 2


FRACTIONS_RULE = (
    "--validation-fraction and --test-fraction must be in [0, 1) and sum to less than 1"
)


@pytest.mark.parametrize(
    ("validation", "test"),
    [(-0.5, 0.1), (0.1, -0.5), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.6, 0.5), (1.2, -0.5)],
)
def test_fractions_outside_the_rule_are_refused(validation: float, test: float) -> None:
    with pytest.raises(DataError) as refused:
        split_examples(dialogues(10), seed=0, validation_fraction=validation, test_fraction=test)
    assert str(refused.value) == FRACTIONS_RULE


def test_too_few_dialogues_for_the_fractions_is_one_line_with_the_fix() -> None:
    with pytest.raises(DataError) as refused:
        split_examples(dialogues(2), seed=0, validation_fraction=0.4, test_fraction=0.5)
    assert str(refused.value) == (
        "only 2 distinct dialogue(s): too few to split; add data or lower the fractions"
    )


def test_a_split_not_requested_stays_empty() -> None:
    split = split_examples(dialogues(10), seed=0, validation_fraction=0.0, test_fraction=0.2)
    assert split["validation"] == [] and len(split["test"]) == 2 and len(split["train"]) == 8


def test_a_csv_row_with_more_cells_than_columns_is_never_truncated(tmp_path: Path) -> None:
    data = (
        b'dialogue,summary\n"A: hi",Greeting.\nB: one, two,Counting,to two.\n"C: bye",Farewell.\n'
    )
    with pytest.raises(DataError, match=r"data\.csv line 3: 4 cells, but the header names 2"):
        run(tmp_path, data, name="data.csv")
    manifest = run(
        tmp_path,
        data,
        name="data.csv",
        skip_invalid=True,
        validation_fraction=0.0,
        test_fraction=0.0,
    )
    assert manifest["dropped"]["extra_cells"] == 1 and manifest["records_out"]["train"] == 2
    assert_accounted(manifest)


def test_repeated_csv_column_names_are_an_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data\.csv line 1: column names \['summary'\] repeat"):
        run(tmp_path, b"dialogue,summary,summary\nA: hi,Hello.,Hi.\n", name="data.csv")


def test_a_byte_order_mark_does_not_cost_line_one(tmp_path: Path) -> None:
    data = b"\xef\xbb\xbf" + jsonl_bytes(json.dumps(good(1)), json.dumps(good(2)))
    manifest = run(tmp_path, data, validation_fraction=0.0, test_fraction=0.0)
    assert manifest["records_in"] == 2 and manifest["records_out"]["train"] == 2


def test_an_unclosed_csv_quote_stops_at_its_row_instead_of_swallowing_the_rest(
    tmp_path: Path,
) -> None:
    """Before, `"A: hi,...` took every later row into one field: 7 of 10 rows vanished and the
    strict error blamed a missing field. Skip mode cannot recover rows after it either."""
    rows = "".join(f"R{i}: hello,Greeting {i}.\n" for i in range(7))
    data = f'dialogue,summary\nA: fine,Fine.\nB: ok,Ok.\n"C: open,Oops.\n{rows}'.encode()
    for skip in (False, True):
        with pytest.raises(
            DataError, match=r"data\.csv line 4: a quoted field opened in this row is never closed"
        ):
            run(tmp_path, data, name="data.csv", skip_invalid=skip)
    # A quoted field that spans lines and is closed stays one valid record.
    fine = b'dialogue,summary\n"A: hi\nB: there",Greeting.\nC: x,Y.\nD: z,W.\n'
    manifest = run(tmp_path, fine, name="data.csv")
    assert manifest["records_in"] == 3 == sum(manifest["records_out"].values())


def test_inputs_identical_once_truncated_are_one_example(tmp_path: Path) -> None:
    """Two dialogues that differ only past the token budget train as the same example."""
    same_start = [
        {"dialogue": "A: one two three four five six " + tail, "summary": "Counting."}
        for tail in ("seven", "eight")
    ]
    data = jsonl_bytes(*(json.dumps(r) for r in [*same_start, good(1), good(2), good(3)]))
    manifest = run(tmp_path, data, max_input_tokens=6)
    assert manifest["dropped"]["duplicate"] == 1 and sum(manifest["records_out"].values()) == 4
    assert_accounted(manifest)


@pytest.mark.parametrize("budget", ["0", "-5"])
def test_a_token_budget_of_nothing_is_refused_in_one_line(tmp_path: Path, budget: str) -> None:
    import subprocess
    import sys

    from tests.conftest import SCRIPTS

    done = subprocess.run(
        [sys.executable, str(SCRIPTS / "preprocess.py"), "--input", str(tmp_path),
         "--output-dir", str(tmp_path / "out"), "--max-input-tokens", budget],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 2
    (line,) = done.stderr.strip().splitlines()
    assert f"--max-input-tokens must be > 0, got {budget}" in line


HOSTILE = {
    "nested.jsonl": (
        b'{"dialogue": ' + b"[" * 100_000 + b"]" * 100_000 + b', "summary": "x"}\n',
        r"nested\.jsonl line 1: JSON nested too deeply to read",
    ),
    "bigint.jsonl": (
        b'{"dialogue": "a", "summary": "b", "n": ' + b"9" * 5000 + b"}\n",
        r"bigint\.jsonl line 1: unreadable JSON value \(Exceeds the limit",
    ),
    "surrogate.jsonl": (
        b'{"dialogue": "a \\ud800 b", "summary": "x"}\n',
        r'surrogate\.jsonl line 1: field "dialogue" holds a lone UTF-16 surrogate escape',
    ),
    "corrupt.parquet": (b"PAR1 not really", r"corrupt\.parquet: not a readable Parquet file"),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_input_is_one_line_not_a_traceback(tmp_path: Path, name: str) -> None:
    data, message = HOSTILE[name]
    with pytest.raises(DataError, match=message) as raised:
        run(tmp_path, data, name=name)
    assert "\n" not in str(raised.value)


def test_a_record_with_a_lone_surrogate_is_counted_in_skip_mode(tmp_path: Path) -> None:
    data = jsonl_bytes(
        '{"dialogue": "a \\ud800 b", "summary": "x"}', *(json.dumps(good(i)) for i in range(3))
    )
    manifest = run(tmp_path, data, skip_invalid=True)
    assert manifest["dropped"]["invalid_utf8"] == 1
    assert_accounted(manifest)


def test_a_long_csv_field_is_a_record_not_an_error(tmp_path: Path) -> None:
    """Python's csv refuses fields over 128 KiB by default; a long transcript is truncated to
    the token budget later, like any long input."""
    long = "word " * 40_000  # 200 KB
    data = f'dialogue,summary\n"{long}",Long.\nA: hi,Hi.\nB: bye,Bye.\n'.encode()
    manifest = run(tmp_path, data, name="data.csv")
    assert manifest["records_in"] == 3 and manifest["truncated_inputs"] == 1


@pytest.mark.parametrize("where", ["output-is-a-file", "bad-tokenizer"])
def test_unusable_output_or_tokenizer_is_one_line(tmp_path: Path, where: str) -> None:
    data = jsonl_bytes(*(json.dumps(good(i)) for i in range(3)))
    source = tmp_path / "data.jsonl"
    source.write_bytes(data)
    blocker = tmp_path / "a-file"
    blocker.write_text("keep me")
    arguments = (
        {"output_dir": str(blocker)}
        if where == "output-is-a-file"
        else {"output_dir": str(tmp_path / "out"), "tokenizer": str(tmp_path / "no-tokenizer")}
    )
    message = "cannot write the splits there" if where == "output-is-a-file" else "cannot load it"
    with pytest.raises(DataError, match=message) as raised:
        preprocess.run(PreprocessArguments(input=str(source), **arguments))
    assert "\n" not in str(raised.value)
    assert blocker.read_text() == "keep me"  # never deleted or overwritten


def test_a_run_that_fails_while_writing_leaves_no_manifest_beside_its_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rerun that fails halfway (a full disk) must not leave the previous manifest describing
    split files it no longer matches."""
    import errno

    data = jsonl_bytes(*(json.dumps(good(i)) for i in range(30)))
    run(tmp_path, data)
    assert (tmp_path / "out" / "manifest.json").is_file()
    written: list[Path] = []

    def disk_fills_on_the_second_split(original):
        """However a split file is written (open, write_text, write_bytes), the disk is
        full by the second split."""

        def write(self: Path, *args, **kwargs):
            mode = args[0] if args and isinstance(args[0], str) else kwargs.get("mode", "w")
            writes = original.__name__ != "open" or "w" in mode or "a" in mode
            if writes and self.parent.name in ("train", "validation", "test"):
                written.append(self)
                if len({p.parent for p in written}) == 2:
                    raise OSError(errno.ENOSPC, "No space left on device")
            return original(self, *args, **kwargs)

        return write

    for method in ("open", "write_text", "write_bytes"):
        monkeypatch.setattr(Path, method, disk_fills_on_the_second_split(getattr(Path, method)))
    with pytest.raises(DataError, match="No space left on device"):
        run(tmp_path, jsonl_bytes(*(json.dumps(good(i)) for i in range(30, 60))))
    assert not (tmp_path / "out" / "manifest.json").exists()


def build(items: list, **kwargs) -> tuple[list[Example], dict[str, int], int]:
    kwargs.setdefault("skip_invalid", False)
    return preprocess.build_examples(items, task=DEFAULT, truncate=lambda t: t, **kwargs)


def test_an_example_keeps_its_records_id_or_is_named_by_its_location() -> None:
    records = [
        readers.Record("d.jsonl line 1", {**good(1), "id": 17}),
        readers.Record("d.jsonl line 2", {**good(2), "id": ""}),
        readers.Record("d.jsonl line 3", good(3)),
    ]
    examples, dropped, truncated = build(records)
    assert [(e.id, e.source) for e in examples] == [
        ("17", "d.jsonl line 1"),
        ("d.jsonl line 2", "d.jsonl line 2"),
        ("d.jsonl line 3", "d.jsonl line 3"),
    ]
    assert (dict(dropped), truncated) == ({}, 0)


@pytest.mark.parametrize(
    ("skip_option", "ending"),
    [
        ("--skip-invalid", " or pass --skip-invalid to skip such records."),
        (None, "."),
    ],
)
def test_an_invalid_record_stops_with_its_place_the_fix_and_the_way_to_skip(
    skip_option: str | None, ending: str
) -> None:
    bad = readers.Invalid("d.jsonl line 4", "invalid_json", "not JSON")
    with pytest.raises(DataError) as stopped:
        build([bad], skip_option=skip_option)
    assert str(stopped.value) == (
        f"d.jsonl line 4: not JSON. Fix it (make each line one JSON object){ending}"
    )


def test_the_default_way_to_skip_is_the_scripts_option() -> None:
    bad = readers.Invalid("d.jsonl line 4", "invalid_json", "not JSON")
    with pytest.raises(DataError, match=r" or pass --skip-invalid to skip such records\.$"):
        preprocess.build_examples(
            [bad], task=DEFAULT, skip_invalid=False, truncate=lambda t: t,
        )  # fmt: skip


def test_a_key_given_twice_stops_with_file_line_and_key(tmp_path: Path) -> None:
    """A repeated key is never resolved to its last value in silence (which text trains would
    depend on how the writer ordered its keys); skipped and counted with --skip-invalid."""
    twice = '{"dialogue": "#Person1#: Hi.", "summary": "A greeting.", "summary": "Hello."}'
    nested = '{"dialogue": "#Person1#: Yo.", "summary": "x", "meta": {"a": 1, "a": 2}}'
    data = jsonl_bytes(json.dumps(good(1)), twice, nested)
    with pytest.raises(DataError, match=r"data\.jsonl line 2: the key 'summary' appears twice"):
        run(tmp_path, data)
    manifest = run(tmp_path, data, skip_invalid=True)
    assert manifest["dropped"]["invalid_json"] == 2 and sum(manifest["records_out"].values()) == 1


@pytest.mark.parametrize("empty", ["input", "output_dir"])
def test_an_empty_path_is_refused_not_read_as_the_current_folder(empty: str) -> None:
    values = {"input": "data.jsonl", "output_dir": "out", empty: ""}
    flag = "--" + empty.replace("_", "-")
    with pytest.raises(DataError, match=f"^{flag} is empty: name a file or folder$"):
        PreprocessArguments(**values)


def test_compressed_data_is_refused_by_name_never_passed_over(tmp_path: Path) -> None:
    import gzip

    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(jsonl_bytes(*(json.dumps(good(i)) for i in range(20))))
    (folder / "b.jsonl.gz").write_bytes(gzip.compress(jsonl_bytes(json.dumps(good(99)))))
    for source in (folder, folder / "b.jsonl.gz"):
        with pytest.raises(DataError, match=r"b\.jsonl\.gz: compressed; preprocess reads"):
            preprocess.run(PreprocessArguments(input=str(source), output_dir=str(tmp_path / "o")))


def test_a_pipe_is_named_for_what_it_is(tmp_path: Path) -> None:
    import os

    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(DataError, match="neither a regular file nor a folder"):
        preprocess.run(PreprocessArguments(input=str(fifo), output_dir=str(tmp_path / "o")))


def test_an_output_folder_inside_the_input_is_never_read_back(tmp_path: Path) -> None:
    """Run twice with the splits written under the input folder: the second run reads the
    data, not the first run's splits."""
    folder = tmp_path / "data"
    folder.mkdir()
    (folder / "a.jsonl").write_bytes(jsonl_bytes(*(json.dumps(good(i)) for i in range(40))))
    arguments = PreprocessArguments(input=str(folder), output_dir=str(folder / "splits"))
    first = preprocess.run(arguments)
    second = preprocess.run(arguments)
    assert first["records_in"] == second["records_in"] == 40
    assert [f["path"] for f in second["inputs"]] == [str(folder / "a.jsonl")]


def test_parquet_memory_follows_a_batch_of_rows_not_the_file(tmp_path: Path) -> None:
    """Dictionary-encoded copies of one long record take a few KB on disk; reading them all
    at once would hold every copy as its own string (400 x 256 KB here)."""
    import tracemalloc

    import pyarrow as pa
    import pyarrow.parquet as pq

    long = "word " * 52_000  # 256 KB
    rows = 400
    table = pa.table(
        {
            "dialogue": pa.array([long] * rows).dictionary_encode(),
            "summary": pa.array([f"s{i}" for i in range(rows)]),
        }
    )
    path = tmp_path / "copies.parquet"
    pq.write_table(table, path)
    assert path.stat().st_size < 1_000_000
    tracemalloc.start()
    try:
        count = sum(1 for _ in readers.read_parquet(path))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert count == rows
    assert peak < 2 * readers.PARQUET_BATCH_ROWS * len(long), peak  # about 33 MB, not 100 MB


def test_parquet_with_a_column_named_twice_is_refused(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_arrays(
        [pa.array(["#Person1#: Hi."]), pa.array(["A."]), pa.array(["B."])],
        names=["dialogue", "summary", "summary"],
    )
    pq.write_table(table, tmp_path / "twice.parquet")
    with pytest.raises(DataError) as raised:
        list(readers.read_parquet(tmp_path / "twice.parquet"))
    assert str(raised.value) == (
        f"{tmp_path / 'twice.parquet'}: the column 'summary' appears twice; give each column "
        "its own name"
    )


def test_parquet_rows_are_numbered_from_1_across_the_readers_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(readers, "PARQUET_BATCH_ROWS", 2)
    path = tmp_path / "five.parquet"
    pq.write_table(pa.Table.from_pylist([{"n": i} for i in range(5)]), path)
    records = list(readers.read_parquet(path))
    assert [(r.location, r.fields) for r in records] == [
        (f"{path} row {i + 1}", {"n": i}) for i in range(5)
    ]


@pytest.mark.parametrize(
    ("codec", "named"),
    [
        ("utf-16", "UTF-16 (little-endian)"),
        ("utf-16-be", None),
        ("utf-32", "UTF-32 (little-endian)"),
    ],
)
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_file_in_another_encoding_is_named_for_it(
    tmp_path: Path, codec: str, named: str | None, suffix: str
) -> None:
    text = (
        'dialogue,summary\n"#Person1#: Hi.","A greeting."\n'
        if suffix == ".csv"
        else json.dumps(good(1)) + "\n"
    )
    data = text.encode(codec)
    if named is None:  # no byte-order mark of its own: give it one
        data, named = b"\xfe\xff" + data, "UTF-16 (big-endian)"
    with pytest.raises(DataError, match=rf"data{suffix}: {re.escape(named)} text; re-encode"):
        run(tmp_path, data, name=f"data{suffix}")


def test_a_file_name_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    import os

    folder = tmp_path / "data"
    folder.mkdir()
    name = os.fsdecode(b"d\xe9.jsonl")
    (folder / name).write_bytes(jsonl_bytes(*(json.dumps(good(i)) for i in range(10))))
    with pytest.raises(DataError, match=r"d\\udce9\.jsonl: the file name is not valid UTF-8"):
        preprocess.run(PreprocessArguments(input=str(folder), output_dir=str(tmp_path / "o")))


def test_an_input_inside_the_output_folder_is_read_and_the_same_folder_is_refused(
    tmp_path: Path,
) -> None:
    raw = tmp_path / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "a.jsonl").write_bytes(jsonl_bytes(*(json.dumps(good(i)) for i in range(40))))
    manifest = preprocess.run(PreprocessArguments(input=str(raw), output_dir=str(raw.parent)))
    assert manifest["records_in"] == 40
    with pytest.raises(DataError, match="the input folder is also --output-dir"):
        preprocess.run(PreprocessArguments(input=str(raw), output_dir=str(raw)))


def test_a_hub_dataset_is_read_record_by_record_naming_each(tmp_path: Path) -> None:
    """The hub reader, through a local dataset folder (no hub here): one input entry with the
    dataset's fingerprint and count, and each row named by its place in the split."""
    folder = tmp_path / "dialogues"
    folder.mkdir()
    rows = [good(i) for i in range(3)]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    inputs, records = readers.read_hub_dataset(str(folder), "train")
    [entry] = inputs
    name = f"hf:{folder}[train]"
    assert (entry.path, entry.format, entry.records) == (name, "huggingface", 3)
    assert len(entry.sha256) == 16  # the datasets library's fingerprint
    assert [(r.location, r.fields) for r in records] == [
        (f"{name} record {i + 1}", row) for i, row in enumerate(rows)
    ]
