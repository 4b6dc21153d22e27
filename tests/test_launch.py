"""How the installer program was started: the header's private variables, and which folder
it may remove at exit (only the one the header made for it)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from lockship.stub.launch import (
    INSTALLER_ENV,
    LOG_DIR_ENV,
    PROG_ENV,
    UNPACKED_DIR_ENV,
    header_folder,
    read_launch,
    remove_unpacked_folder,
)


def header_made(base: Path, *, unpacker: bool = True) -> Path:
    """A folder as the header leaves it: the unpacker, the program folder it filled, the lock
    and the program's TMPDIR (here with a link script that rattler left in it)."""
    folder = base / "lockship-Ab3dE6gH"
    (folder / "stub" / "_internal").mkdir(parents=True)
    (folder / "stub" / "lockship-stub").write_bytes(b"\x7fELF the program")
    (folder / "stub" / "_internal" / "libpython3.11.so.1.0").write_bytes(b"\x7fELF")
    if unpacker:
        (folder / "unpack").write_bytes(b"\x7fELF the unpacker")
    (folder / ".lock").touch()
    (folder / "tmp").mkdir()
    (folder / "tmp" / ".tmpktLldv.sh").write_text("post-link\n")
    return folder


def program(folder: Path) -> Path:
    return folder / "stub" / "lockship-stub"


def test_the_header_variables(tmp_path: Path) -> None:
    folder = header_made(tmp_path)
    environ = {
        INSTALLER_ENV: "/downloads/demo.sh",
        PROG_ENV: "demo.sh",
        UNPACKED_DIR_ENV: str(folder),
        LOG_DIR_ENV: str(tmp_path),
    }
    launch = read_launch(
        ["-b"], environ, argv0=str(program(folder)), executable=str(program(folder)), frozen=True
    )
    assert launch.argv == ("-b",)
    assert launch.installer == Path("/downloads/demo.sh")
    assert launch.prog == "demo.sh"
    assert launch.unpacked_dir == folder
    assert launch.log_dir == str(tmp_path)
    remove_unpacked_folder(launch)
    assert not folder.exists()


def test_without_the_header_the_program_reads_its_own_file(tmp_path: Path) -> None:
    """A Windows .exe, or a stub run by hand; the builder's LOCKSHIP_STUB_DIR means nothing."""
    stubs = tmp_path / "lockship-stubs"
    stubs.mkdir()
    (stubs / "stub").write_text("mine")
    environ = {"LOCKSHIP_STUB_DIR": str(stubs)}
    exe = r"C:\Users\me\Downloads\demo-1.0-win-64.exe"
    launch = read_launch([], environ, argv0=exe, executable=exe, frozen=True)
    assert launch.installer == Path(exe)
    assert launch.unpacked_dir is None
    assert launch.log_dir is None
    remove_unpacked_folder(launch)
    assert (stubs / "stub").read_text() == "mine"


@pytest.mark.parametrize(
    "what",
    ["missing", "other name", "other files", "no stub", "another program", "a file", "empty"],
)
def test_only_the_headers_folder_is_taken(tmp_path: Path, what: str) -> None:
    folder = header_made(tmp_path)
    executable, value = program(folder), str(folder)
    if what == "missing":
        value = str(tmp_path / "lockship-gone")
    elif what == "other name":
        value = str(folder.rename(tmp_path / "stubs"))
        executable = program(Path(value))
    elif what == "other files":
        (folder / "lockship-stub-linux-64").write_text("the user's")
    elif what == "no stub":
        shutil.rmtree(folder / "stub")
    elif what == "another program":
        executable = tmp_path / "elsewhere"
        executable.write_text("x")
    elif what == "a file":
        value = str(program(folder))
    elif what == "empty":
        value = ""
    assert header_folder(value, executable=executable, frozen=True) is None


def test_run_from_sources_the_copy_is_a_script(tmp_path: Path) -> None:
    """LOCKSHIP_TEST_STUB=python: the header's program runs python, so sys.executable is
    elsewhere."""
    folder = header_made(tmp_path, unpacker=False)
    python = tmp_path / "python"
    assert header_folder(str(folder), executable=python, frozen=False) == folder
    assert header_folder(str(folder), executable=python, frozen=True) is None
