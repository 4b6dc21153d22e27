"""The install core: :func:`install` coordinates a package source and an environment
destination, in pypa/installer's shape, and touches no file itself.

The order is fixed: stage the packages (verified), link them, then, while the staged files
are removed, finish the environment, install the wheels, compile .pyc files and run the
post-install script. The destination's transaction rolls everything back if any step fails.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from lockship.stub.destination import EnvironmentDestination
from lockship.stub.errors import InstallError
from lockship.stub.shared.progress import Reporter
from lockship.stub.source import PackageSource


def install(source: PackageSource, destination: EnvironmentDestination, reporter: Reporter) -> None:
    """Install everything ``source`` carries into ``destination``.

    The destination holds the plan that preflight made for the source's manifest; nothing is
    checked again here.
    """
    manifest, request = source.manifest, destination.plan.request
    if manifest != destination.plan.manifest:
        raise InstallError("the install plan was made for another installer")
    with destination.transaction():
        staged = destination.stage(source, reporter)
        destination.link(staged, reporter)
        with destination.discard(staged):
            destination.finalize()
            written = _install_wheels(source, destination, reporter)
            if manifest.options.pyc:
                destination.compile_pyc(written, reporter)
            script = manifest.options.post_install
            if script and not request.run_post_install:
                reporter.message("Skipping the post-install script (--no-post-install)")
            elif script:
                destination.run_post_install(source, script, reporter)


def _install_wheels(
    source: PackageSource, destination: EnvironmentDestination, reporter: Reporter
) -> list[Path]:
    """Replace the previous install's wheels with the source's; return the .py files written.

    An update (``-u``) leaves a wheel that is unchanged (same file, same sha256) alone and
    removes the others by their RECORD, also those the lock no longer has; a reinstall
    (``-f``) replaces them all.
    """
    names = source.manifest.options.wheels
    request = destination.plan.request
    previous = destination.installed_wheels() if request.update or request.force else {}
    if not names and not previous:
        return []
    force = request.force
    wanted = {PurePosixPath(name).name: _wheel_sha256(source, name) for name in names}
    kept = {
        file_name: wheel
        for file_name, wheel in previous.items()
        if not force and wanted.get(file_name) == wheel.sha256
    }
    for file_name, wheel in previous.items():
        if file_name not in kept:
            destination.remove_wheel(wheel)
    installed = list(kept.values())
    written: list[Path] = []
    reporter.start("Installing wheels", len(names), unit="wheel")
    for name in names:
        if PurePosixPath(name).name not in kept:
            wheel = destination.install_wheel(source, name)
            installed.append(wheel)
            written += destination.wheel_sources(wheel)
        reporter.advance(1)
    reporter.finish()
    destination.record_wheels(installed)
    return written


def _wheel_sha256(source: PackageSource, name: str) -> str | None:
    """The sha256 of the wheel ``name``: its entry's, or for one a delta installer does not
    carry, the base's (the wheel is unchanged in the prefix)."""
    delta = source.manifest.delta
    if delta is not None and not delta.carries(name):
        return delta.wheel_sha256(PurePosixPath(name).name)
    return source.digest(name)
