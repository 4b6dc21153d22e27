"""The builder's post-install script, run last with the environment's details in its
environment; its output goes straight to the user."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from lockship.stub.errors import InstallError
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.progress import Reporter


class PostInstallError(InstallError):
    """The post-install script failed. The installer exits 1 like any failure, whatever the
    script's code (2 would read as a usage error, 130 as an interruption): the message says it."""

    def __init__(self, script: str, code: int) -> None:
        self.code = code
        how = f"was killed by signal {-code}" if code < 0 else f"failed with exit code {code}"
        super().__init__(
            f"the post-install script {script} {how}; "
            "see its output above (run the installer with --no-post-install to skip it)"
        )


def run_post_install(
    script: Path, prefix: Path, manifest: Manifest, *, unattended: bool, reporter: Reporter
) -> None:
    """Run the builder's post-install script; its output goes straight to the user."""
    env = {
        **os.environ,
        "PREFIX": str(prefix),
        "INSTALLER_NAME": manifest.name,
        "INSTALLER_VERSION": manifest.version,
        "INSTALLER_PLATFORM": manifest.platform,
        "INSTALLER_UNATTENDED": "1" if unattended else "0",
    }
    if script.suffix == ".bat":
        command = ["cmd.exe", "/d", "/c", str(script)]
    elif script.suffix == ".ps1":
        command = [
            "powershell.exe",
            "-NoProfile",
            "-ExecutionPolicy",
            "Bypass",
            "-File",
            str(script),
        ]
    else:
        command = ["/bin/sh", str(script)]
    reporter.message(f"Running the post-install script {script.name}")
    sys.stdout.flush()
    code = subprocess.run(command, env=env, cwd=prefix, check=False).returncode
    if code != 0:
        raise PostInstallError(script.name, code)
