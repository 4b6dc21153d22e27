"""The install core: :func:`install` carries out an install plan by coordinating a package
source and an environment destination, in pypa/installer's shape, and touches no file itself.

The order is fixed: stage the packages (verified), link them, then, while the staged files
are removed, finish the environment, install the wheels, compile .pyc files and run the
post-install script. The destination's transaction rolls everything back if any step fails.
Policy is decided here, from the plan, and nowhere else: which of an earlier install's wheels
an update (``-u``) keeps and a reinstall (``-f``) replaces, whether the post-install script
runs.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from lockship.stub.destination import EnvironmentDestination, Staged, WheelTarget
from lockship.stub.preflight import InstallPlan
from lockship.stub.shared.manifest import Manifest, plan_wheels
from lockship.stub.shared.progress import Reporter
from lockship.stub.source import PackageSource


def install(
    plan: InstallPlan,
    source: PackageSource,
    destination: EnvironmentDestination[Staged],
    reporter: Reporter,
) -> None:
    """Install what ``plan`` says, with the entries of ``source``, into ``destination``.

    The plan is what preflight checked; nothing is checked again here.
    """
    manifest, request = plan.manifest, plan.request
    with destination.transaction(request.installer_name):
        staged = destination.stage(manifest, source, reporter)
        with destination.link(manifest, staged, reporter):
            destination.finalize(manifest, request.installer_name)
            written = _install_wheels(plan, source, destination.wheels(manifest), reporter)
            if manifest.options.pyc:
                destination.compile_pyc(manifest, written, reporter)
            script = manifest.options.post_install
            if script and not request.run_post_install:
                reporter.message("Skipping the post-install script (--no-post-install)")
            elif script:
                destination.post_install(
                    manifest, source, script, reporter, unattended=request.unattended
                )


def _install_wheels(
    plan: InstallPlan, source: PackageSource, target: WheelTarget, reporter: Reporter
) -> list[Path]:
    """Replace the previous install's wheels with the manifest's (``plan_wheels``); return the
    .py files written."""
    manifest, request = plan.manifest, plan.request
    entries = manifest.options.wheels
    previous = target.installed() if request.update or request.force else {}
    if not entries and not previous:
        return []
    wanted = [(entry, _wheel_sha256(manifest, source, entry)) for entry in entries]
    chosen = plan_wheels(previous, wanted, force=request.force)
    for file_name in chosen.remove:
        target.remove(file_name)
    written: list[Path] = []
    reporter.start("Installing wheels", len(entries), unit="wheel")
    for entry in entries:
        if entry in chosen.install:
            written += target.install(source, entry)
        reporter.advance(1)
    reporter.finish()
    return written


def _wheel_sha256(manifest: Manifest, source: PackageSource, entry: str) -> str | None:
    """The sha256 of the wheel ``entry``: its entry's, or for one a delta installer does not
    carry, the base's (the wheel is unchanged in the prefix)."""
    delta = manifest.delta
    if delta is not None and not delta.carries(entry):
        return delta.wheel_sha256(PurePosixPath(entry).name)
    return source.digest(entry)
