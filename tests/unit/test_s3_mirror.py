"""The folder that stands in for S3 on a local run (pipelines/local/s3_mirror.py): each call
answers as S3 would for the same objects, checked object by object."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.local.errors import MissingInputError, UnsupportedConstructError
from pipelines.local.s3_mirror import S3Mirror, split_s3_uri


def files(root: Path) -> dict[str, bytes]:
    """Every file under `root`, by its path relative to it."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


@pytest.mark.parametrize(
    ("uri", "parts"),
    [
        ("s3://bucket/a/b.json", ("bucket", "a/b.json")),
        ("s3://bucket/prefix/", ("bucket", "prefix/")),
        ("s3://bucket", ("bucket", "")),
    ],
)
def test_an_s3_uri_splits_into_its_bucket_and_key(uri: str, parts: tuple[str, str]) -> None:
    assert split_s3_uri(uri) == parts


@pytest.mark.parametrize("uri", ["https://bucket/key", "/bucket/key", "S3://bucket/key", None, 3])
def test_anything_but_an_s3_uri_is_a_construct_the_runner_refuses(uri: object) -> None:
    with pytest.raises(UnsupportedConstructError) as refused:
        split_s3_uri(uri)
    assert str(refused.value) == f"expected an s3:// URI, got {uri!r}"


def test_objects_put_are_read_got_and_listed_by_prefix_in_key_order(tmp_path: Path) -> None:
    mirror = S3Mirror(tmp_path)
    for key in ("runs/2/b.json", "runs/1/a.json", "runs/10/c.json", "other/d.json"):
        mirror.put("bucket", key, key.encode())
    assert mirror.path("s3://bucket/runs/1/a.json") == tmp_path / "bucket" / "runs/1/a.json"
    assert mirror.get("bucket", "runs/2/b.json") == b"runs/2/b.json"
    assert mirror.read("s3://bucket/runs/1/a.json") == b"runs/1/a.json"
    assert mirror.list_keys("bucket", "runs/") == [
        "runs/1/a.json",
        "runs/10/c.json",
        "runs/2/b.json",
    ]
    assert mirror.list_keys("bucket", "runs/1") == ["runs/1/a.json", "runs/10/c.json"]
    assert mirror.list_keys("bucket", "") == [
        "other/d.json", "runs/1/a.json", "runs/10/c.json", "runs/2/b.json",
    ]  # fmt: skip
    assert mirror.list_keys("no-such-bucket", "") == []


@pytest.mark.parametrize("uri", ["s3://bucket/absent.json", "s3://bucket/runs", "s3://none/x"])
def test_reading_what_is_not_an_object_answers_none_as_a_404_would(
    tmp_path: Path, uri: str
) -> None:
    mirror = S3Mirror(tmp_path)
    mirror.put("bucket", "runs/1/a.json", b"a")
    assert mirror.read(uri) is None  # s3://bucket/runs is a prefix, not an object


def test_an_input_downloads_its_object_or_every_object_under_its_prefix(tmp_path: Path) -> None:
    mirror = S3Mirror(tmp_path / "s3")
    mirror.put("bucket", "data/train.jsonl", b"t")
    mirror.put("bucket", "data/nested/test.jsonl", b"e")
    mirror.download("s3://bucket/data/train.jsonl", tmp_path / "one")
    assert files(tmp_path / "one") == {"train.jsonl": b"t"}
    mirror.download("s3://bucket/data", tmp_path / "all")
    assert files(tmp_path / "all") == {"train.jsonl": b"t", "nested/test.jsonl": b"e"}


def test_an_input_that_does_not_exist_names_its_uri_and_where_it_was_looked_for(
    tmp_path: Path,
) -> None:
    mirror = S3Mirror(tmp_path)
    with pytest.raises(MissingInputError) as missing:
        mirror.download("s3://bucket/data", tmp_path / "target")
    assert str(missing.value) == (
        f"input s3://bucket/data does not exist (local mirror {tmp_path / 'bucket' / 'data'})"
    )


def test_a_jobs_output_uploads_as_a_folder_merged_into_the_prefix_or_as_one_object(
    tmp_path: Path,
) -> None:
    mirror = S3Mirror(tmp_path / "s3")
    mirror.put("bucket", "out/kept.json", b"old")
    output = tmp_path / "output"
    (output / "sub").mkdir(parents=True)
    (output / "model.tar.gz").write_bytes(b"m")
    (output / "sub" / "x.json").write_bytes(b"x")
    mirror.upload(output, "s3://bucket/out")
    assert files(tmp_path / "s3" / "bucket") == {
        "out/kept.json": b"old", "out/model.tar.gz": b"m", "out/sub/x.json": b"x",
    }  # fmt: skip
    mirror.upload(output / "model.tar.gz", "s3://bucket/single/model.tar.gz")
    assert mirror.get("bucket", "single/model.tar.gz") == b"m"
    assert files(output) == {"model.tar.gz": b"m", "sub/x.json": b"x"}  # copied, not moved


def test_checkpoints_move_in_replacing_what_is_there_and_leave_no_source(tmp_path: Path) -> None:
    mirror = S3Mirror(tmp_path / "s3")
    mirror.put("bucket", "ckpt/step-1/state.pt", b"old")
    source = tmp_path / "checkpoints"
    (source / "step-1").mkdir(parents=True)
    (source / "step-1" / "state.pt").write_bytes(b"new")
    (source / "step-2").mkdir()
    (source / "step-2" / "state.pt").write_bytes(b"two")
    mirror.move_in(source, "s3://bucket/ckpt")
    assert files(tmp_path / "s3" / "bucket") == {
        "ckpt/step-1/state.pt": b"new", "ckpt/step-2/state.pt": b"two",
    }  # fmt: skip
    assert not source.exists()
    fresh = tmp_path / "fresh"
    (fresh / "step-1" / "optimizer").mkdir(parents=True)
    (fresh / "step-1" / "optimizer" / "state.pt").write_bytes(b"o")
    mirror.move_in(fresh, "s3://bucket/new/prefix")  # nothing there yet: folders made
    assert mirror.get("bucket", "new/prefix/step-1/optimizer/state.pt") == b"o"


def test_staged_assets_land_under_their_bucket_by_key(tmp_path: Path) -> None:
    mirror = S3Mirror(tmp_path)
    mirror.put_assets("bucket", {"code/train.py": b"print()", "code/requirements.txt": b"x"})
    assert files(tmp_path) == {
        "bucket/code/train.py": b"print()", "bucket/code/requirements.txt": b"x",
    }  # fmt: skip


def test_writing_again_where_objects_already_are_adds_or_replaces_them(tmp_path: Path) -> None:
    """A second object beside another, an input downloaded again into its folder, an object
    uploaded again over itself, under prefixes several folders deep."""
    mirror = S3Mirror(tmp_path / "s3")
    mirror.put("bucket", "runs/1/a.json", b"a")
    mirror.put("bucket", "runs/1/b.json", b"b")
    for _ in range(2):
        mirror.download("s3://bucket/runs/1", tmp_path / "input")
    assert files(tmp_path / "input") == {"a.json": b"a", "b.json": b"b"}
    artifact = tmp_path / "model.tar.gz"
    for body in (b"first", b"second"):
        artifact.write_bytes(body)
        mirror.upload(artifact, "s3://bucket/models/job-1/output/model.tar.gz")
    assert mirror.get("bucket", "models/job-1/output/model.tar.gz") == b"second"


def test_a_job_that_wrote_no_checkpoints_moves_nothing(tmp_path: Path) -> None:
    mirror = S3Mirror(tmp_path / "s3")
    mirror.move_in(tmp_path / "never-made", "s3://bucket/ckpt")
    assert mirror.list_keys("bucket", "") == []
