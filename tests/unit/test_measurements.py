"""What the jobs measure and read beside a model (training_scripts/measurements.py and
artifacts.py): byte counts and progress lines for people, peak memory, sizes on disk, the bytes
a deployment ships, an adapter's stored parameters, and SageMaker's model.tar.gz unpacked."""

from __future__ import annotations

import io
import resource
import sys
import tarfile
from pathlib import Path

import pytest

from training_scripts import artifacts, contracts, measurements


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "n/a"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1024, "1.0 KB"),
        (1536, "1.5 KB"),
        (1024**2 - 1, "1024.0 KB"),
        (1024**2, "1.0 MB"),
        (int(2.25 * 1024**3), "2.2 GB"),
        (5 * 1024**4, "5120.0 GB"),  # no unit past GB
    ],
)
def test_a_byte_count_reads_in_the_largest_unit_it_fills(value: int | None, shown: str) -> None:
    assert measurements.format_bytes(value) == shown


@pytest.mark.parametrize(
    ("args", "since", "line"),
    [
        ((8, 13, 24.0), 0, "8/13 (62%), 24s elapsed, about 15s left"),
        ((8, 13, 24.0), 5, "8/13 (62%), 24s elapsed, about 40s left"),  # a resumed run's pace
        ((5, 13, 2.0), 5, "5/13 (38%), 2s elapsed, time left not known yet"),
        ((0, 13, 0.0), 0, "0/13 (0%), 0s elapsed, time left not known yet"),
        ((13, 13, 30.4), 0, "13/13 (100%), 30s elapsed, about 0s left"),
        ((0, 0, 1.0), 0, "0/0 (100%), 1s elapsed, time left not known yet"),
    ],
)
def test_a_progress_line_extrapolates_the_time_left_from_the_pace_since_it_started(
    args: tuple[int, int, float], since: int, line: str
) -> None:
    assert measurements.progress(*args, since=since) == line


def test_a_progress_line_paces_from_the_first_item_unless_told_otherwise() -> None:
    assert measurements.progress(1, 4, 3.0) == "1/4 (25%), 3s elapsed, about 9s left"


def test_a_directory_size_counts_every_file_below_it(tmp_path: Path) -> None:
    (tmp_path / "a").write_bytes(b"x" * 3)
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "sub" / "deeper" / "b").write_bytes(b"x" * 5)
    assert measurements.directory_size(tmp_path) == 8
    assert measurements.directory_size(tmp_path / "a") == 3
    assert measurements.directory_size(tmp_path / "sub" / "deeper" / "..") == 5


@pytest.mark.parametrize(("platform", "scale"), [("linux", 1024), ("darwin", 1)])
def test_peak_memory_on_a_cpu_is_the_peak_rss_in_bytes(
    monkeypatch: pytest.MonkeyPatch, platform: str, scale: int
) -> None:
    """ru_maxrss is KiB on Linux, bytes on macOS."""
    monkeypatch.setattr(sys, "platform", platform)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = measurements.peak_memory()
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    assert peak["peak_memory_kind"] == "cpu_peak_rss"
    assert before * scale <= peak["peak_memory_bytes"] <= after * scale


def test_peak_memory_on_a_gpu_is_what_cuda_allocated_at_most(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda: 123.0)
    assert measurements.peak_memory() == {
        "peak_memory_bytes": 123,
        "peak_memory_kind": "cuda_max_allocated",
    }


# --- artifacts ---------------------------------------------------------------------------------


def model_files(folder: Path, names: dict[str, int]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, size in names.items():
        (folder / name).write_bytes(b"x" * size)
    return folder


def tarball(target: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(target, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return target


def test_a_deployment_ships_an_adapters_weights_and_config_not_its_tokenizer(
    tmp_path: Path,
) -> None:
    folder = model_files(
        tmp_path / "adapter",
        {
            "adapter_config.json": 10,
            "adapter_model.safetensors": 1000,
            "adapter_model.bin": 7,
            "tokenizer.json": 500,
            "README.md": 3,
        },
    )
    assert artifacts.artifact_bytes(folder, adapter=True) == 1017


def test_a_deployment_ships_a_full_models_weights_and_config_not_its_tokenizer(
    tmp_path: Path,
) -> None:
    folder = model_files(
        tmp_path / "full",
        {
            "config.json": 10,
            "model-00001-of-00002.safetensors": 1000,
            "model-00002-of-00002.safetensors": 200,
            "pytorch_model.bin": 7,
            "tokenizer.json": 500,
            "adapter_config.json": 4,
        },
    )
    assert artifacts.artifact_bytes(folder, adapter=False) == 1217
    assert artifacts.artifact_bytes(tmp_path / "missing", adapter=False) == 0


def test_an_adapters_parameters_are_those_its_file_stores(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"a": torch.zeros(2, 3), "b": torch.zeros(4), "c": torch.zeros(1, 1, 5)},
              str(tmp_path / "adapter_model.safetensors"))  # fmt: skip
    assert artifacts.adapter_parameter_count(tmp_path) == 15


def test_training_metrics_are_read_beside_the_model_or_are_none(tmp_path: Path) -> None:
    assert artifacts.read_training_metrics(tmp_path) == {}
    document = {
        "method": "qlora",
        "trainable_params": 5,
        "total_params": 9,
        "train_runtime_s": 1.5,
        "global_step": 3,
    }
    contracts.TRAINING_METRICS.write(tmp_path, document)
    read = artifacts.read_training_metrics(tmp_path)
    assert {key: read[key] for key in document} == document


def test_a_model_archive_is_unpacked_into_scratch_and_a_folder_is_read_in_place(
    tmp_path: Path,
) -> None:
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    folder = model_files(tmp_path / "folder", {"config.json": 2})
    assert artifacts.unpack_if_archive(str(folder), scratch) == folder
    holding = tmp_path / "holding"
    holding.mkdir()
    archive = tarball(holding / "model.tar.gz", {"config.json": b"{}", "sub/w.bin": b"123"})
    for source in (archive, holding):  # the archive, or the folder SageMaker put it in
        unpacked = artifacts.unpack_if_archive(str(source), scratch)
        assert unpacked.parent == scratch and unpacked.name.startswith("model-")
        assert sorted(str(p.relative_to(unpacked)) for p in unpacked.rglob("*")) == [
            "config.json",
            "sub",
            "sub/w.bin",
        ]
        assert (unpacked / "sub/w.bin").read_bytes() == b"123"


def test_an_archive_that_would_write_outside_scratch_is_refused(tmp_path: Path) -> None:
    archive = tarball(tmp_path / "model.tar.gz", {"../escaped": b"x"})
    with pytest.raises(tarfile.OutsideDestinationError):
        artifacts.unpack_if_archive(str(archive), tmp_path)
    assert not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("name", ["missing", "weights.bin", "model.tar"])
def test_a_model_path_that_is_no_folder_or_archive_is_an_error_naming_it(
    tmp_path: Path, name: str
) -> None:
    path = tmp_path / name
    if name != "missing":
        path.write_bytes(b"x")
    with pytest.raises(FileNotFoundError) as missing:
        artifacts.unpack_if_archive(str(path), tmp_path)
    assert str(missing.value) == f"{path}: no such model folder or model.tar.gz"
