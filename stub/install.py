"""The install core: :func:`install` coordinates a package source and an environment
destination, in pypa/installer's shape, and touches no file itself.

The order is fixed: stage the packages (verified), link them, then, while the staged files
are removed, finish the environment, install the wheels, compile .pyc files and run the
post-install script. The destination's transaction rolls everything back if any step fails.
"""

from __future__ import annotations

from pathlib import Path

from lockship.stub.destination import EnvironmentDestination
from lockship.stub.errors import InstallError
from lockship.stub.progress import Reporter
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
            written: list[Path] = []
            if manifest.options.wheels:
                wheels = manifest.options.wheels
                reporter.start("Installing wheels", len(wheels), unit="wheel")
                for name in wheels:
                    written += destination.install_wheel(source, name)
                    reporter.advance(1)
                reporter.finish()
                destination.record_wheels(wheels)
            if manifest.options.pyc:
                destination.compile_pyc(written, reporter)
            script = manifest.options.post_install
            if script and not request.run_post_install:
                reporter.message("Skipping the post-install script (--no-post-install)")
            elif script:
                destination.run_post_install(source, script, reporter)
