"""Linking the staged packages into the prefix with ``rattler.install``, its progress bridged
to our reporter, and what rattler leaves for us to do about its records.

``conda-meta/*.json`` come out as rattler writes them. Their ``extracted_package_dir`` and
``link.source`` name the staging folder's package cache, which is removed after linking: like
conda's after ``conda clean``, they say where the files were linked from, and no tool needs
that folder to exist. Only records whose URL rattler was given as a staged copy (the copy
route, see ``stub.staging``) are rewritten, and only their ``url``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import rattler
from lockship.stub.compat import one_line, tls_roots_for_rattler
from lockship.stub.errors import InstallError, LinkError
from lockship.stub.shared.manifest import PackageInfo
from lockship.stub.shared.progress import Reporter
from lockship.stub.signals import deferred
from lockship.stub.staging import StagedPackages
from rattler import PrefixRecord, Subdir


class _LinkReporter(rattler.InstallerReporter):
    """Bridges rattler's callbacks to our reporter; remembers failing link scripts."""

    def __init__(self, reporter: Reporter) -> None:
        self.reporter = reporter
        self.failed_scripts: list[str] = []
        self._scripts: dict[int, str] = {}

    def on_link_complete(self, index: int) -> None:
        self.reporter.advance(1)

    def on_post_link_start(self, package_name: str, script_path: str) -> int:
        token = len(self._scripts)
        self._scripts[token] = package_name
        self.reporter.message(f"Running the post-link script of {package_name}")
        return token

    def on_post_link_complete(self, index: int, success: bool) -> None:
        if not success:
            self.failed_scripts.append(self._scripts.get(index, "?"))


def link_packages(
    staged: StagedPackages,
    prefix: Path,
    platform: str,
    reporter: Reporter,
    *,
    link_scripts: bool,
    installed: Sequence[PrefixRecord] = (),
    alternative_prefix: str | None = None,
) -> None:
    """Link ``staged`` into ``prefix`` (replacing ``installed``, the packages there before).

    ``alternative_prefix`` is the prefix written into the files instead of ``prefix``, for an
    environment that will live elsewhere (an image's)."""
    # only rattler's coroutine needs asyncio, whose import (~25 ms here) would otherwise come
    # before the installer's first line, and before --info, --check or an early error
    import asyncio

    bridge = _LinkReporter(reporter)  # type: ignore[abstract]  # rattler's no-op defaults
    reporter.start("Linking", len(staged.records), unit="pkg")
    try:
        # signals wait until rattler is done: a half-linked package cannot be rolled back
        with deferred(), tls_roots_for_rattler(staged.folder):
            asyncio.run(
                rattler.install(
                    staged.records,
                    prefix,
                    cache_dir=None if staged.package_cache else staged.cache_dir,
                    package_cache=staged.package_cache,
                    platform=Subdir(platform),
                    installed_packages=list(installed) or None,
                    execute_link_scripts=link_scripts,
                    show_progress=False,
                    reporter=bridge,
                    alternative_target_prefix=alternative_prefix,
                )
            )
    except InstallError:
        raise
    except Exception as e:  # rattler's own error types carry the cause in their message
        raise LinkError(f"installing the packages failed: {one_line(e)}") from e
    finally:
        reporter.finish()
    if bridge.failed_scripts:
        raise LinkError(
            "the post-link script of "
            + ", ".join(sorted(set(bridge.failed_scripts)))
            + " failed; see the messages above"
        )


def restore_locked_urls(prefix: Path, packages: Sequence[PackageInfo]) -> None:
    """Give records that rattler wrote with a staged copy's URL the locked URL back."""
    for package in packages:
        path = prefix / "conda-meta" / f"{package.name}-{package.version}-{package.build}.json"
        record = PrefixRecord.from_path(path)
        if record.url == package.url:
            continue  # an unchanged package of an update: rattler did not write it
        record.url = package.url
        partial = path.with_name(path.name + ".part")
        record.write_to_path(partial, pretty=False)
        os.replace(partial, path)


def installed_records(prefix: Path) -> list[PrefixRecord]:
    """The packages already in ``prefix`` (for an update, rattler's transaction diffs them)."""
    records = []
    for path in sorted((prefix / "conda-meta").glob("*.json")):
        try:
            records.append(PrefixRecord.from_path(path))
        except Exception as e:  # rattler raises its own error types for unreadable records
            raise InstallError(
                f"cannot read {path} ({e}); repair or remove it, or install into a new prefix"
            ) from e
    return records
