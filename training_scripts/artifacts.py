"""The jobs' model artifacts as evaluation reads them: SageMaker's model.tar.gz unpacked, the
bytes a deployment ships, an adapter's stored parameters, and train.py's metrics beside them."""

from __future__ import annotations

import math
import tarfile
import tempfile
from pathlib import Path
from typing import Any

if __package__:  # imported as part of the training_scripts package
    from . import contracts, measurements
else:  # run as a file in a SageMaker job: sibling modules are top-level
    import contracts
    import measurements


def unpack_if_archive(path: str, scratch: Path) -> Path:
    """A folder of model files; SageMaker's model.tar.gz (or a folder holding one) is unpacked
    into `scratch`, which the caller removes."""
    candidate = Path(path)
    archive = candidate / "model.tar.gz" if candidate.is_dir() else candidate
    if archive.is_file() and archive.name.endswith(".tar.gz"):
        target = Path(tempfile.mkdtemp(prefix="model-", dir=scratch))
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        return target
    if not candidate.is_dir():
        raise FileNotFoundError(f"{path}: no such model folder or model.tar.gz")
    return candidate


def artifact_bytes(model_dir: Path, *, adapter: bool) -> int:
    """Bytes a deployment must ship for this model: weights and config, not the tokenizer."""
    if adapter:
        files = [model_dir / "adapter_config.json", *model_dir.glob("adapter_model.*")]
    else:
        files = [
            model_dir / "config.json",
            *model_dir.glob("*.safetensors"),
            *model_dir.glob("*.bin"),
        ]
    return sum(measurements.directory_size(f) for f in files if f.is_file())


def adapter_parameter_count(adapter_dir: Path) -> int:
    """Parameters stored in the adapter file: what trained (a loaded adapter is frozen)."""
    from safetensors import safe_open

    with safe_open(str(adapter_dir / "adapter_model.safetensors"), framework="pt") as handle:
        return sum(math.prod(handle.get_slice(key).get_shape()) for key in handle.keys())  # noqa: SIM118


def read_training_metrics(model_dir: Path) -> dict[str, Any]:
    """train.py's metrics beside the model; a model trained elsewhere has none."""
    path = contracts.TRAINING_METRICS.path(model_dir)
    return contracts.TRAINING_METRICS.read(path) if path.is_file() else {}
