"""The installer's packages described as conda repodata, and as the rattler records to link.

``--extract`` writes a real local channel from these documents. The install itself links the
locked records: each package's record as the lock gave it, with its locked ``fn``, ``url`` and
``channel``, so ``conda-meta`` says where the package really comes from.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from lockship.stub.shared.manifest import PackageInfo
from rattler import Channel, RepoData, RepoDataRecord


def by_subdir(packages: Iterable[PackageInfo]) -> dict[str, list[PackageInfo]]:
    """The packages grouped by subdir, in a stable order."""
    groups: dict[str, list[PackageInfo]] = defaultdict(list)
    for package in packages:
        groups[package.subdir].append(package)
    return dict(sorted(groups.items()))


def repodata_document(subdir: str, packages: Iterable[PackageInfo]) -> dict[str, Any]:
    doc: dict[str, Any] = {"info": {"subdir": subdir}, "packages": {}, "packages.conda": {}}
    for p in packages:
        key = "packages.conda" if p.file_name.endswith(".conda") else "packages"
        doc[key][p.file_name] = p.record
    return doc


def write_repodata(path: Path, subdir: str, packages: Iterable[PackageInfo]) -> None:
    path.write_text(json.dumps(repodata_document(subdir, packages), sort_keys=True), "utf-8")


def locked_records(packages: Sequence[PackageInfo], scratch: Path) -> list[RepoDataRecord]:
    """One rattler record per package (same order), with its locked ``fn``/``url``/``channel``.

    py-rattler 0.28 parses records only from files, and its ``PackageRecord`` constructor cannot
    carry ``purls`` or ``run_exports``: so rattler's own parser reads the locked records from
    one repodata-shaped file per subdir in ``scratch`` (in the staging folder), and each
    record then gets the locked location. No archive is described at a local URL.
    """
    scratch.mkdir(parents=True, exist_ok=True)
    parsed: dict[tuple[str, str], RepoDataRecord] = {}
    for subdir, group in by_subdir(packages).items():
        path = scratch / f"{subdir}.json"
        write_repodata(path, subdir, group)
        for record in RepoData.from_path(path).into_repo_data(Channel(scratch.as_uri())):
            parsed[(subdir, record.file_name)] = record
    records = []
    for p in packages:
        record = parsed[(p.subdir, p.file_name)]
        record.url = p.url
        record.channel = p.channel
        records.append(record)
    return records
