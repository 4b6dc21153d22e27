"""``--sign-command``: the user's signer, its failures and its time limit."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lockship.builder.errors import BuildError
from lockship.builder.output import signing


def _state(pid: int) -> str | None:
    """The process's state letter, or None when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    return stat.rsplit(")", 1)[1].split()[0]


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc (Linux)")
def test_a_hung_signer_started_by_the_shell_is_stopped_at_the_time_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(signing, "SIGN_TIMEOUT", 1)
    installer = tmp_path / "app-1.0-win-64.exe"
    installer.write_bytes(b"MZ")
    pid_file = tmp_path / "signer.pid"
    # the shell runs the signer as its child (not exec'd): the case a plain timeout misses
    command = f"test -f {{file}} && sh -c 'echo $$ > {pid_file}; exec sleep 60' && true"
    started = time.monotonic()
    with pytest.raises(BuildError, match=r"^the sign command took longer than 1 s$"):
        signing.sign_installer(command, installer, installer.name)
    assert time.monotonic() - started < 20
    pid = int(pid_file.read_text())
    for _ in range(50):
        if _state(pid) in (None, "Z"):
            break
        time.sleep(0.1)
    assert _state(pid) in (None, "Z"), "the signer the shell started still runs"


def test_a_failing_signer_is_named_with_its_last_line(tmp_path: Path) -> None:
    installer = tmp_path / "app-1.0-win-64.exe"
    installer.write_bytes(b"MZ")
    command = "echo checking {file}; echo 'SignTool Error: no certificates' >&2; exit 3"
    with pytest.raises(BuildError) as e:
        signing.sign_installer(command, installer, "app-1.0-win-64.exe")
    assert str(e.value) == (
        "the sign command failed with exit code 3 on app-1.0-win-64.exe: "
        "SignTool Error: no certificates"
    )


def test_a_command_without_the_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BuildError, match=r"must name the file to sign as \{file\}"):
        signing.sign_installer("signtool sign", tmp_path / "x.exe", "x.exe")
