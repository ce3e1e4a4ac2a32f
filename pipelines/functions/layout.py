"""Where published datasets and baselines live in the stack's bucket: one definition, read by
the publishing commands, the pipeline's functions and the local runner. Each task of a stage
has its own datasets and its own baseline:

    s3://<bucket>/datasets/<task>/versions/<version>/...     a version's files, never rewritten
    s3://<bucket>/datasets/<task>/published/<version>.json   its marker, written last
    s3://<bucket>/baselines/<task>/evaluation.json           the figures reuse mode reads

A version is `<UTC time to the microsecond>Z-<12 hex of the content hash>`: sorting versions
as text sorts them by publication time, and the hash says whether two hold the same files.
"""

from __future__ import annotations

import re

DATASETS = "datasets/"
BASELINES = "baselines/"
LATEST = "latest"
# What a run's BaselineEvaluationUri means by default: its task's stored baseline.
TASK_BASELINE = "task-baseline"
VERSION = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{12}")
# What a function that lists every task's published markers may ask for (s3:prefix).
ALL_DATASET_MARKERS = f"{DATASETS}*/published/*"


def dataset_markers(task: str) -> str:
    return f"{DATASETS}{task}/published/"


def dataset_prefix(task: str, version: str) -> str:
    return f"{DATASETS}{task}/versions/{version}/"


def dataset_uri(bucket: str, task: str, version: str) -> str:
    return f"s3://{bucket}/{dataset_prefix(task, version)}"


def marker_key(task: str, version: str) -> str:
    return f"{dataset_markers(task)}{version}.json"


def versions_in(task: str, marker_keys: list[str]) -> list[str]:
    """The task's published versions among the keys under its markers, oldest first."""
    names = (k.removeprefix(dataset_markers(task)).removesuffix(".json") for k in marker_keys)
    return sorted(n for n in names if VERSION.fullmatch(n))


def baseline_key(task: str) -> str:
    """The task's current baseline, which `baseline publish` replaces."""
    return f"{BASELINES}{task}/evaluation.json"


def baseline_copy_key(task: str, sha256: str) -> str:
    """The same baseline addressed by its content: what a run reads, so that the step cache,
    which keys on input URIs, evaluates anew when another baseline is published. A folder
    per digest: the evaluation job finds the file under the name evaluation.json."""
    return f"{BASELINES}{task}/sha256-{sha256}/evaluation.json"
