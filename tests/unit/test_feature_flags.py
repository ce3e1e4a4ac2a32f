"""cdk.json sets every feature flag the installed aws-cdk-lib recommends for new projects (the
list `cdk init` writes, shipped in the library's jsii package), each at its recommended value
unless the README names it and says why."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import aws_cdk

from tests.conftest import REPO


def recommended_flags() -> dict[str, object]:
    (package,) = Path(aws_cdk.__file__).parent.glob("_jsii/aws-cdk-lib@*.jsii.tgz")
    with tarfile.open(package) as archive:
        for member in archive:
            if member.name == "package/recommended-feature-flags.json":
                return json.load(archive.extractfile(member))  # type: ignore[arg-type]
    raise AssertionError(f"{package} holds no recommended-feature-flags.json")


def test_every_recommended_flag_is_set_and_each_deviation_is_explained() -> None:
    recommended = recommended_flags()
    context = json.loads((REPO / "cdk.json").read_text())["context"]
    missing = sorted(set(recommended) - set(context))
    assert not missing, f"cdk.json does not set these recommended feature flags: {missing}"
    readme = (REPO / "README.md").read_text()
    unexplained = [
        flag for flag, value in recommended.items()
        if context[flag] != value and f"`{flag}`" not in readme
    ]  # fmt: skip
    assert not unexplained, f"set against the recommendation without a word: {unexplained}"
    assert len(recommended) > 80  # the list was read, not an empty file
