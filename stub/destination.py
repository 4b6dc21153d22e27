"""Where an installation goes, seen by the install core: the :class:`EnvironmentDestination`
seam (with :class:`WheelTarget` for the PyPI wheels), and :class:`PrefixDestination`, a conda
prefix on this machine linked by rattler.

A destination does what it is told, in the order :func:`stub.install.install` fixes, and
decides nothing about policy: whether an earlier install's wheels are replaced, whether the
post-install script runs, is the core's call. Each step gets the manifest it works on.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol, TypeVar

from lockship.stub.errors import InstallError
from lockship.stub.finish import finish_prefix, read_marker
from lockship.stub.linking import installed_records, link_packages, restore_locked_urls
from lockship.stub.prefix import LOCK_NAME, STAGE_NAME, Transaction, prefix_transaction
from lockship.stub.pyc import compile_pyc
from lockship.stub.shared.manifest import LinkedPackage, Manifest, kept_on_update
from lockship.stub.shared.payload import PayloadError
from lockship.stub.shared.progress import Reporter
from lockship.stub.source import PackageSource, write_entry
from lockship.stub.staging import StagedPackages, choose_stager, discarding

if TYPE_CHECKING:  # the wheels module imports pypa/installer: only when there are wheels
    from lockship.stub.wheels import InstalledWheel

#: what a destination's :meth:`~EnvironmentDestination.stage` hands back to its ``link``
Staged = TypeVar("Staged")


class EnvironmentDestination(Protocol[Staged]):
    """An environment being installed, step by step."""

    def transaction(self, installer_name: str) -> AbstractContextManager[None]:
        """Every other step happens inside; if one fails, a new environment is removed again
        and an existing one is left as it was (should that fail too, the message names
        ``installer_name``, the program to run again)."""

    def stage(self, manifest: Manifest, source: PackageSource, reporter: Reporter) -> Staged:
        """Get the manifest's packages out of ``source``, verified, to where they are linked
        from; raise on the first that does not match its sha256."""

    def link(
        self, manifest: Manifest, staged: Staged, reporter: Reporter
    ) -> AbstractContextManager[None]:
        """Link the staged packages; what staging wrote is removed while the body runs."""

    def finalize(self, manifest: Manifest, installer_name: str) -> None:
        """Write the environment's metadata, activation scripts and uninstaller."""

    def wheels(self, manifest: Manifest) -> WheelTarget:
        """Where the manifest's PyPI wheels go."""

    def compile_pyc(self, manifest: Manifest, extra: Sequence[Path], reporter: Reporter) -> None:
        """Compile the environment's python sources and the ``extra`` files to .pyc."""

    def post_install(
        self,
        manifest: Manifest,
        source: PackageSource,
        entry: str,
        reporter: Reporter,
        *,
        unattended: bool,
    ) -> None:
        """Run the source's post-install script ``entry``; raise if it fails."""


class WheelTarget(Protocol):
    """The PyPI wheels of an environment, by file name."""

    def installed(self) -> Mapping[str, str | None]:
        """The sha256 of each wheel an earlier install put there."""

    def remove(self, file_name: str) -> None:
        """Remove an earlier install's wheel (every file it installed)."""

    def install(self, source: PackageSource, entry: str) -> list[Path]:
        """Install the source's wheel ``entry``; the .py files it wrote."""


class FileSystemError(InstallError):
    def __init__(self, error: OSError, *, existed: bool) -> None:
        where = f" ({error.filename})" if error.filename else ""
        advice = (
            "free some space and run the installer again"
            if error.errno == errno.ENOSPC
            else ("check the folder's permissions and free space")
        )
        state = "" if existed else "; nothing was left behind"
        super().__init__(
            f"writing the environment failed: {error.strerror or error}{where}{state}; {advice}"
        )


class RolledBack(InstallError):
    """An update or reinstall failed and the prefix was restored from its snapshot."""

    def __init__(self, error: InstallError | PayloadError, prefix: Path) -> None:
        self.error, self.exit_code = error, error.exit_code
        super().__init__(f"{error}; the environment at {prefix} is unchanged")


@dataclass(frozen=True)
class PrefixDestination:
    """A conda prefix on this machine, staged in ``<prefix>/.lockship-stage``.

    Staging inside the prefix keeps rattler's package cache on the prefix's filesystem, so it
    can hardlink. ``workers`` processes unpack the archives (0: rattler unpacks verified
    copies), as preflight chose (``InstallPlan.workers``).
    """

    prefix: Path
    workers: int = 0

    @property
    def folder(self) -> Path:
        return self.prefix / STAGE_NAME

    @contextmanager
    def transaction(self, installer_name: str) -> Iterator[None]:
        existed = _holds_files(self.prefix)
        state = Transaction()
        try:
            with prefix_transaction(
                self.prefix, journal=self._journal(), installer=installer_name
            ) as state:
                yield
        except OSError as e:
            error = FileSystemError(e, existed=existed)
            if not state.restored:
                raise error from e
            raise RolledBack(error, self.prefix) from e
        except (InstallError, PayloadError) as e:  # a damaged entry is the format's error
            if not state.restored:
                raise
            raise RolledBack(e, self.prefix) from e

    def _journal(self) -> dict[str, object]:
        """What the prefix holds now, for the message of a restore after a kill."""
        marker = read_marker(self.prefix) or {}
        return {"name": marker.get("name"), "version": marker.get("version")}

    def stage(
        self, manifest: Manifest, source: PackageSource, reporter: Reporter
    ) -> StagedPackages:
        # an update's packages: rattler's transaction diffs against them, and keeps some
        installed = tuple(installed_records(self.prefix))
        unchanged = kept_on_update(map(LinkedPackage.of_record, installed), manifest.packages)
        stager = choose_stager(manifest, source, self.workers, unchanged)
        return replace(stager.stage(self.folder, reporter), installed=installed)

    @contextmanager
    def link(
        self, manifest: Manifest, staged: StagedPackages, reporter: Reporter
    ) -> Iterator[None]:
        link_packages(
            staged,
            self.prefix,
            manifest.platform,
            reporter,
            link_scripts=manifest.options.link_scripts,
            installed=staged.installed,
        )
        if staged.relocated:
            restore_locked_urls(self.prefix, manifest.packages)
        with discarding(staged):
            yield

    def finalize(self, manifest: Manifest, installer_name: str) -> None:
        finish_prefix(self.prefix, manifest, installer_name=installer_name)

    def wheels(self, manifest: Manifest) -> PrefixWheels:
        return PrefixWheels(self.prefix, manifest, self.folder / "wheels")

    def compile_pyc(self, manifest: Manifest, extra: Sequence[Path], reporter: Reporter) -> None:
        compile_pyc(self.prefix, manifest, reporter, extra=extra)

    def post_install(
        self,
        manifest: Manifest,
        source: PackageSource,
        entry: str,
        reporter: Reporter,
        *,
        unattended: bool,
    ) -> None:
        from lockship.stub.postinstall import run_post_install

        path = _written(source, entry, self.folder / "scripts")
        run_post_install(path, self.prefix, manifest, unattended=unattended, reporter=reporter)


class PrefixWheels:
    """The wheels in a prefix's site-packages, installed with pypa/installer, listed in
    ``conda-meta/lockship-wheels`` (rewritten after each change); wheel files are written to
    ``folder`` first."""

    def __init__(self, prefix: Path, manifest: Manifest, folder: Path) -> None:
        self.prefix, self.manifest, self.folder = prefix, manifest, folder
        self._listed: dict[str, InstalledWheel] | None = None

    def _wheels(self) -> dict[str, InstalledWheel]:
        if self._listed is None:
            from lockship.stub.wheels import read_wheels  # late: its imports take 50 ms

            self._listed = read_wheels(self.prefix)
        return self._listed

    def installed(self) -> dict[str, str | None]:
        return {name: wheel.sha256 for name, wheel in self._wheels().items()}

    def remove(self, file_name: str) -> None:
        from lockship.stub.wheels import record_wheels, remove_wheel

        wheels = self._wheels()
        remove_wheel(self.prefix, wheels.pop(file_name))
        record_wheels(self.prefix, wheels.values())

    def install(self, source: PackageSource, entry: str) -> list[Path]:
        from lockship.stub.wheels import install_wheel, python_files, record_wheels

        path = _written(source, entry, self.folder)
        wheel = install_wheel(path, source.digest(entry), self.prefix, self.manifest)
        wheels = self._wheels()
        wheels[wheel.file_name] = wheel
        record_wheels(self.prefix, wheels.values())
        return python_files(self.prefix, wheel)


def _written(source: PackageSource, entry: str, folder: Path) -> Path:
    """Entry ``entry`` written, verified, to a new file in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PurePosixPath(entry).name
    write_entry(source, entry, path)
    return path


def _holds_files(prefix: Path) -> bool:
    """Whether ``prefix`` holds anything (so a failure cannot claim to leave nothing behind)."""
    try:
        return any(name != LOCK_NAME for name in os.listdir(prefix))
    except OSError:
        return False
