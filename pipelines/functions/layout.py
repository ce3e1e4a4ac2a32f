"""Where published datasets and baselines live in the stack's bucket: one definition, read by
the publishing commands, the pipeline's functions and the local runner.

    s3://<bucket>/datasets/versions/<version>/...     a dataset version's files, never rewritten
    s3://<bucket>/datasets/published/<version>.json   its marker, written last: the version exists
    s3://<bucket>/baselines/evaluation.json           the full fine-tune figures reuse mode reads

A version is `<UTC time to the microsecond>Z-<12 hex of the content hash>`: sorting versions
as text sorts them by publication time, and the hash says whether two hold the same files.
"""

from __future__ import annotations

import re

DATASET_VERSIONS = "datasets/versions/"
DATASET_MARKERS = "datasets/published/"
BASELINES = "baselines/"
BASELINE_EVALUATION = f"{BASELINES}evaluation.json"
LATEST = "latest"
VERSION = re.compile(r"\d{8}T\d{12}Z-[0-9a-f]{12}")


def dataset_uri(bucket: str, version: str) -> str:
    return f"s3://{bucket}/{DATASET_VERSIONS}{version}/"


def marker_key(version: str) -> str:
    return f"{DATASET_MARKERS}{version}.json"


def versions_in(marker_keys: list[str]) -> list[str]:
    """The published versions among the keys under DATASET_MARKERS, oldest first."""
    names = (k.removeprefix(DATASET_MARKERS).removesuffix(".json") for k in marker_keys)
    return sorted(n for n in names if VERSION.fullmatch(n))
