"""Where an installation goes, seen by the install core: the :class:`EnvironmentDestination`
seam, and :class:`PrefixDestination`, a conda prefix on this machine linked by rattler."""

from __future__ import annotations

import errno
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from lockship.stub.errors import InstallError
from lockship.stub.finish import finish_prefix, read_marker
from lockship.stub.linking import installed_records, link_packages, restore_locked_urls
from lockship.stub.payload import PayloadError
from lockship.stub.prefix import STAGE_NAME, Transaction, prefix_transaction
from lockship.stub.preflight import InstallPlan
from lockship.stub.progress import Reporter
from lockship.stub.pyc import compile_pyc
from lockship.stub.source import PackageSource, write_entry
from lockship.stub.staging import StagedPackages, choose_stager, discarding, unchanged_entries

if TYPE_CHECKING:  # the wheels module imports pypa/installer: only when there are wheels
    from lockship.stub.wheels import InstalledWheel


class EnvironmentDestination(Protocol):
    """An environment being installed, step by step, as :func:`stub.install.install` asks."""

    @property
    def plan(self) -> InstallPlan:
        """What preflight checked: the manifest, the request, the staging route."""

    def transaction(self) -> AbstractContextManager[None]:
        """Everything happens inside; on failure a new environment is removed again and an
        existing one is marked incomplete."""

    def stage(self, source: PackageSource, reporter: Reporter) -> StagedPackages:
        """Get the source's packages, verified, to where they are linked from."""

    def link(self, staged: StagedPackages, reporter: Reporter) -> None: ...

    def discard(self, staged: StagedPackages) -> AbstractContextManager[None]:
        """Remove what staging wrote while the body runs."""

    def finalize(self) -> None:
        """Write the environment's metadata, activation scripts and uninstaller."""

    def installed_wheels(self) -> dict[str, InstalledWheel]:
        """The wheels an earlier install put there, by file name."""

    def remove_wheel(self, wheel: InstalledWheel) -> None:
        """Remove an earlier install's wheel by its RECORD."""

    def install_wheel(self, source: PackageSource, name: str) -> InstalledWheel:
        """Install the source's wheel ``name``."""

    def wheel_sources(self, wheel: InstalledWheel) -> list[Path]:
        """The .py files a wheel installed."""

    def record_wheels(self, wheels: Sequence[InstalledWheel]) -> None: ...

    def compile_pyc(self, extra: Sequence[Path], reporter: Reporter) -> None: ...

    def run_post_install(self, source: PackageSource, name: str, reporter: Reporter) -> None:
        """Run the source's post-install script ``name``; raise if it fails."""


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
    can hardlink.
    """

    plan: InstallPlan

    @property
    def prefix(self) -> Path:
        return self.plan.request.prefix

    @property
    def folder(self) -> Path:
        return self.prefix / STAGE_NAME

    @contextmanager
    def transaction(self) -> Iterator[None]:
        request = self.plan.request
        state = Transaction()
        try:
            with prefix_transaction(
                self.prefix, journal=self._journal(), installer=request.installer_name
            ) as state:
                yield
        except OSError as e:
            error = FileSystemError(e, existed=request.update or request.force)
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

    def stage(self, source: PackageSource, reporter: Reporter) -> StagedPackages:
        request = self.plan.request
        installed = tuple(installed_records(self.prefix)) if request.update or request.force else ()
        unchanged = unchanged_entries(self.plan.manifest, installed)
        staged = choose_stager(source, self.plan.workers, unchanged).stage(self.folder, reporter)
        return replace(staged, installed=installed)

    def link(self, staged: StagedPackages, reporter: Reporter) -> None:
        manifest = self.plan.manifest
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

    def discard(self, staged: StagedPackages) -> AbstractContextManager[None]:
        return discarding(staged)

    def finalize(self) -> None:
        finish_prefix(
            self.prefix, self.plan.manifest, installer_name=self.plan.request.installer_name
        )

    def installed_wheels(self) -> dict[str, InstalledWheel]:
        from lockship.stub.wheels import read_wheels

        return read_wheels(self.prefix)

    def remove_wheel(self, wheel: InstalledWheel) -> None:
        from lockship.stub.wheels import remove_wheel

        remove_wheel(self.prefix, wheel)

    def install_wheel(self, source: PackageSource, name: str) -> InstalledWheel:
        from lockship.stub.wheels import install_wheel  # late: its imports take 50 ms

        path = self._write(source, "wheels", name)
        return install_wheel(path, source.digest(name), self.prefix, self.plan.manifest)

    def wheel_sources(self, wheel: InstalledWheel) -> list[Path]:
        from lockship.stub.wheels import python_files

        return python_files(self.prefix, wheel)

    def record_wheels(self, wheels: Sequence[InstalledWheel]) -> None:
        from lockship.stub.wheels import record_wheels

        record_wheels(self.prefix, wheels)

    def compile_pyc(self, extra: Sequence[Path], reporter: Reporter) -> None:
        compile_pyc(self.prefix, self.plan.manifest, reporter, extra=extra)

    def run_post_install(self, source: PackageSource, name: str, reporter: Reporter) -> None:
        from lockship.stub.postinstall import run_post_install

        path = self._write(source, "scripts", name)
        request = self.plan.request
        run_post_install(
            path, self.prefix, self.plan.manifest, unattended=request.unattended, reporter=reporter
        )

    def _write(self, source: PackageSource, kind: str, name: str) -> Path:
        """Write an entry, verified, to a new file in the staging folder."""
        folder = self.folder / kind
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / PurePosixPath(name).name
        write_entry(source, name, path)
        return path
