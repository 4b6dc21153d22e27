"""Every way users describe an environment, read into a :class:`~.model.Source`.

One frozen source class per input kind: :class:`~.pixi.PixiSource` (``pixi.lock``, any version
rattler reads), :class:`~.condalock.CondaLockSource` (``conda-lock.yml`` v1, categories),
:class:`~.explicit.ExplicitSource` (``@EXPLICIT`` files) and :class:`~.specs.SolvedSource`
(``--spec``, solved with rattler at build time). An ``environment.yml`` is not a source:
:func:`open_input` reads it as a :class:`~.specs.SpecRequest`, which becomes a source once
solved. Archives given with ``--inject`` are added per platform (:func:`inject_packages`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from lockship.builder.errors import BuildError, LockfileError
from lockship.builder.inputs.condalock import read_conda_lock
from lockship.builder.inputs.explicit import read_explicit
from lockship.builder.inputs.model import PlatformEnvironment, Source
from lockship.builder.inputs.pixi import read_pixi
from lockship.builder.inputs.specs import SpecRequest, read_environment_yml
from lockship.builder.pypi.tags import inject_wheels
from rattler import Client, MatchSpec, RepoDataRecord


@dataclass(frozen=True)
class InputOptions:
    """How to read an input: what to select from it, and how to fetch what it only names."""

    cache_dir: Path
    client: Client
    environment: str
    categories: tuple[str, ...]
    ignore_non_wheels: bool
    concurrency: int
    retries: int


Reader = Callable[[Path, InputOptions], "Source | SpecRequest"]


def _pixi(path: Path, options: InputOptions) -> Source:
    return read_pixi(path, options.environment, ignore_non_wheels=options.ignore_non_wheels)


def _conda_lock(path: Path, options: InputOptions) -> Source:
    return read_conda_lock(path, options.categories, ignore_non_wheels=options.ignore_non_wheels)


def _explicit(path: Path, options: InputOptions) -> Source:
    return read_explicit(
        path,
        cache_dir=options.cache_dir,
        client=options.client,
        concurrency=options.concurrency,
        retries=options.retries,
    )


def _environment_yml(path: Path, options: InputOptions) -> SpecRequest:
    return read_environment_yml(path)


def detect_reader(path: Path) -> Reader:
    """The reader for ``path``, chosen from its contents."""
    if path.is_dir():
        return _pixi
    try:
        head = path.read_bytes()[:65536].decode("utf-8", "replace")
    except OSError as e:
        raise LockfileError(f"cannot read {path}: {e.strerror or e}") from e
    conda_lock = "\nmetadata:" in head and "\npackage:" in head
    if "@EXPLICIT" in head:
        return _explicit
    if path.name.endswith(".lock") or (
        head.lstrip().startswith("version:") and ("environments:" in head or "packages:" in head)
    ):
        return _conda_lock if conda_lock else _pixi
    if conda_lock:
        return _conda_lock
    if "dependencies:" in head:
        return _environment_yml
    return _pixi


def open_input(path: Path, options: InputOptions) -> Source | SpecRequest:
    """A source, or for an ``environment.yml`` the request still to be solved."""
    if not path.exists():
        raise LockfileError(f"the lockfile {path} does not exist")
    return detect_reader(path)(path, options)


# --- injected packages ---------------------------------------------------------------------


def inject_packages(paths: Sequence[Path], environment: PlatformEnvironment) -> PlatformEnvironment:
    """Add local archives to a platform's records after checking they fit; wheels
    (``.whl``) replace the locked PyPI package of their name (:func:`inject_wheels`)."""
    if not paths:
        return environment
    environment = inject_wheels([p for p in paths if p.name.endswith(".whl")], environment)
    records = list(environment.records)
    injected = []
    for path in paths:
        if path.name.endswith(".whl"):
            continue
        if not path.is_file() or not path.name.endswith((".conda", ".tar.bz2")):
            raise BuildError(f"--inject {path}: not a .conda, .tar.bz2 or .whl file")
        try:
            record = asyncio.run(RepoDataRecord.from_package_archive(path))
        except Exception as e:
            raise BuildError(f"--inject {path}: not a readable conda package ({e})") from e
        if str(record.subdir) not in (environment.platform, "noarch"):
            raise BuildError(
                f"--inject {path.name} is built for {record.subdir}, not {environment.platform} "
                "or noarch"
            )
        record.url = path.resolve().as_uri()
        record.channel = path.resolve().parent.as_uri()
        records = [r for r in records if r.name.normalized != record.name.normalized]
        injected.append(record)
    everything = records + injected
    for record in injected:
        for depends in record.depends:
            if depends.startswith("__"):
                continue
            spec = MatchSpec(depends)
            if not any(spec.matches(candidate) for candidate in everything):
                raise BuildError(
                    f"--inject {record.file_name} depends on {depends!r}, which no locked "
                    f"package for {environment.platform} satisfies; add it to the lock"
                )
    return replace(environment, records=tuple(everything))
