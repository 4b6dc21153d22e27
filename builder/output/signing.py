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
import signal
import subprocess
import sys
import tempfile
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
        code, output = _run_signer(line, SIGN_TIMEOUT)
    except subprocess.TimeoutExpired as e:
        raise BuildError(f"the sign command took longer than {e.timeout:.0f} s") from e
    if code != 0:
        said = output.strip().splitlines()[-1:] or ["no output"]
        raise BuildError(
            f"the sign command failed with exit code {code} on {final_name}: {said[0]}"
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


def _run_signer(line: str, timeout: float) -> tuple[int, str]:
    """Run ``line`` through the shell in a process group of its own; its exit code and output.

    On a timeout the whole group is killed, not only the shell: a signer the shell started
    (``a && b``, or cmd.exe on Windows) would otherwise run on, and pipes it inherited would
    keep :func:`subprocess.run` waiting for it. Output goes to a file for the same reason.
    """
    with tempfile.TemporaryFile() as output:
        if sys.platform == "win32":
            process = subprocess.Popen(
                line,
                shell=True,
                stdout=output,
                stderr=subprocess.STDOUT,
                creationflags=subprocess.CREATE_NEW_PROCESS_GROUP,
            )
        else:
            process = subprocess.Popen(
                line, shell=True, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
            )
        try:
            code = process.wait(timeout)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            raise
        output.seek(0)
        return code, output.read().decode(errors="replace")


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    if sys.platform == "win32":
        subprocess.run(
            ["taskkill", "/F", "/T", "/PID", str(process.pid)],
            capture_output=True,
            check=False,
            timeout=60,
        )
        process.kill()
    else:
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
