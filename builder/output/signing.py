"""``lockship build --sign-command 'CMD {file}'``: the user's signer, run on each finished
Windows installer before it is renamed into place and before ``SHA256SUMS`` is written.

Authenticode signing (signtool, AzureSignTool, osslsigncode) appends a certificate table after
the file's data; the installer finds its payload in front of it (``stub/shared/payload.py``),
and the signature covers the payload. The command runs through the shell, ``{file}`` replaced by the
installer's (temporary) path, quoted; it may sign in place or replace the file.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

from lockship.builder.errors import BuildError
from lockship.stub.shared.boundary import file_sha256
from lockship.stub.shared.payload import PayloadError, read_payload

#: how long a signer may take (timestamp servers can be slow)
SIGN_TIMEOUT = 15 * 60


def sign_installer(command: str, installer: Path, final_name: str) -> str:
    """Run ``command`` on ``installer``; check the payload is still readable; its sha256."""
    if "{file}" not in command:
        raise BuildError("--sign-command must name the file to sign as {file}")
    quoted = subprocess.list2cmdline([str(installer)]) if sys.platform == "win32" else None
    line = command.replace("{file}", quoted or shlex.quote(str(installer)))
    try:
        process = subprocess.run(
            line, shell=True, capture_output=True, text=True, timeout=SIGN_TIMEOUT, check=False
        )
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"the sign command took longer than {e.timeout:.0f} s") from e
    if process.returncode != 0:
        said = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["no output"]
        raise BuildError(
            f"the sign command failed with exit code {process.returncode} on {final_name}: "
            f"{said[0]}"
        )
    try:
        read_payload(installer)
    except PayloadError as e:
        raise BuildError(
            f"{final_name} is no longer a complete installer after the sign command ({e}); "
            "the signer must append its signature, not rewrite the file"
        ) from e
    with open(installer, "rb") as f:
        os.fsync(f.fileno())
    return file_sha256(installer)
