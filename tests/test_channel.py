"""The installer's packages as repodata (``--extract``) and as the locked rattler records the
install links."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from lockship.stub.channel import by_subdir, locked_records, repodata_document

from tests.factories import locked_package, write_conda_package


def test_locked_records_are_the_lock_records_at_their_locked_urls(tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    alpha, _ = locked_package(write_conda_package(channel, "alpha", "1.0", files={"a": "a"}))
    beta, _ = locked_package(
        write_conda_package(channel, "beta", "2.0", subdir="linux-64", files={"b": "b"}),
        channel="https://conda.anaconda.org/conda-forge",
    )
    # fields py-rattler's PackageRecord constructor cannot carry must survive too
    alpha = replace(
        alpha,
        record={
            **alpha.record,
            "purls": ["pkg:pypi/alpha@1.0"],
            "run_exports": {"weak": ["alpha >=1"]},
            "track_features": "feat",
        },
    )
    records = locked_records([beta, alpha], tmp_path / "scratch")
    assert [r.file_name for r in records] == [beta.file_name, alpha.file_name]
    for package, record in zip([beta, alpha], records, strict=True):
        assert (record.url, record.channel) == (package.url, package.channel)
        data = json.loads(record.to_json())
        assert (data.pop("fn"), data.pop("url"), data.pop("channel")) == (
            package.file_name,
            package.url,
            package.channel,
        )
        assert data == package.record


def test_repodata_documents_group_by_subdir_and_format(tmp_path: Path) -> None:
    channel = tmp_path / "channel"
    conda, _ = locked_package(write_conda_package(channel, "a", "1", files={"a": "a"}))
    bz2, _ = locked_package(
        write_conda_package(channel, "b", "1", subdir="linux-64", files={"b": "b"}, fmt=".tar.bz2")
    )
    groups = by_subdir([conda, bz2])
    assert list(groups) == ["linux-64", "noarch"]
    assert repodata_document("linux-64", groups["linux-64"]) == {
        "info": {"subdir": "linux-64"},
        "packages": {bz2.file_name: bz2.record},
        "packages.conda": {},
    }
    assert repodata_document("noarch", groups["noarch"])["packages.conda"] == {
        conda.file_name: conda.record
    }


def test_extract_does_not_load_the_install_path() -> None:
    code = (
        "import sys, lockship.stub.extract; "
        "print(' '.join(sorted(m for m in sys.modules if m.startswith('lockship.'))))"
    )
    loaded = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    assert loaded == [
        "lockship.stub",
        "lockship.stub.channel",
        "lockship.stub.errors",
        "lockship.stub.extract",
        "lockship.stub.shared",
        "lockship.stub.shared.boundary",
        "lockship.stub.shared.manifest",
        "lockship.stub.shared.payload",
        "lockship.stub.shared.progress",
    ]
