"""The stub pack: a program folder behind the native unpacker the ``.sh`` header runs.

The unpacker is compiled here with this machine's C compiler (once, cached like a freeze's).
"""

from __future__ import annotations

import fcntl
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import IO

import pytest
from lockship.builder.errors import StubError
from lockship.builder.stubs.pack import (
    PROGRAM,
    archive_bytes,
    compile_unpacker,
    compress_frames,
    host_unpacker,
    read_layout,
    trailer,
    unpack,
    write_pack,
)

from tests.conftest import MountTmpfs
from tests.trees import tree_state


@pytest.fixture(scope="module")
def unpacker() -> Path:
    return host_unpacker()


def program_folder(root: Path) -> Path:
    """A folder shaped like PyInstaller's one-folder output, with a bit of everything."""
    folder = root / "frozen"
    (folder / "_internal" / "rattler").mkdir(parents=True)
    (folder / "_internal" / "empty").mkdir()
    (folder / "lockship-stub").write_text('#!/bin/sh\necho frozen program "$@"\n')
    (folder / "lockship-stub").chmod(0o755)
    (folder / "_internal" / "rattler" / "rattler.abi3.so").write_bytes(os.urandom(300_000))
    (folder / "_internal" / "base_library.zip").write_bytes(b"zip" * 100_000)
    (folder / "_internal" / "libpython.so").symlink_to("rattler/rattler.abi3.so")
    return folder


def test_a_pack_unpacks_to_the_same_tree_and_runs(tmp_path: Path, unpacker: Path) -> None:
    folder = program_folder(tmp_path)
    pack = tmp_path / "stub.pack"
    write_pack(pack, unpacker, folder)
    layout = read_layout(pack)
    assert layout.unpacker_size == unpacker.stat().st_size
    assert pack.read_bytes()[: layout.unpacker_size] == unpacker.read_bytes()
    program = unpack(pack, tmp_path / "out")
    assert program == tmp_path / "out" / PROGRAM
    assert tree_state(tmp_path / "out" / "stub") == tree_state(folder)
    run = subprocess.run([program, "-b"], capture_output=True, text=True, check=True)
    assert run.stdout == "frozen program -b\n"


@pytest.mark.parametrize("threads", ["0", "1", "2", "7"])
def test_any_number_of_decoding_threads_gives_the_same_tree(
    tmp_path: Path, unpacker: Path, threads: str
) -> None:
    """0: the main thread decodes each frame when it needs it (as when no thread can start)."""
    folder = program_folder(tmp_path)
    data = archive_bytes(folder)
    frames = compress_frames(data, frames=13, level=1)  # files and headers across frame ends
    head = unpacker.read_bytes()
    pack = tmp_path / "stub.pack"
    pack.write_bytes(head + frames + trailer(len(head), len(frames)))
    out = tmp_path / "out"
    out.mkdir()
    command = [unpacker, pack, str(len(head)), str(len(frames)), out]
    env = {**os.environ, "LOCKSHIP_UNPACK_THREADS": threads}
    subprocess.run(command, env=env, check=True)
    assert tree_state(out / "stub") == tree_state(folder)


def test_a_thread_count_that_is_not_a_number_is_refused(tmp_path: Path, unpacker: Path) -> None:
    pack = tmp_path / "stub.pack"
    write_pack(pack, unpacker, program_folder(tmp_path))
    layout = read_layout(pack)
    out = tmp_path / "out"
    out.mkdir()
    command = [unpacker, pack, str(layout.frames_offset), str(layout.frames_size), out]
    env = {**os.environ, "LOCKSHIP_UNPACK_THREADS": "many"}
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    assert run.returncode == 1
    assert (
        run.stderr == "lockship-unpack: LOCKSHIP_UNPACK_THREADS is not a number of threads: many\n"
    )
    assert list(out.iterdir()) == []


def test_packing_the_same_folder_gives_the_same_bytes(tmp_path: Path, unpacker: Path) -> None:
    folder = program_folder(tmp_path)
    write_pack(tmp_path / "one", unpacker, folder)
    os.utime(folder / "lockship-stub", (0, 0))  # another time stamp changes nothing
    write_pack(tmp_path / "two", unpacker, folder)
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()
    with tarfile.open(fileobj=io.BytesIO(archive_bytes(folder))) as archive:
        names = archive.getnames()
        assert names == sorted(names) and names[0] == "stub"
        assert {(m.uid, m.gid, m.mtime) for m in archive.getmembers()} == {(0, 0, 315532800)}


@pytest.mark.parametrize("threads", ["0", ""])
@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_frames_exit_2_with_one_line(
    tmp_path: Path, unpacker: Path, damage: str, threads: str
) -> None:
    folder = program_folder(tmp_path)
    pack = tmp_path / "stub.pack"
    write_pack(pack, unpacker, folder)
    layout = read_layout(pack)
    data = bytearray(pack.read_bytes())
    if damage == "flipped":
        data[layout.frames_offset + layout.frames_size // 2] ^= 0xFF
    else:
        del data[layout.frames_offset + layout.frames_size - 100 :]
    broken = tmp_path / "broken"
    broken.write_bytes(data)
    out = tmp_path / "out"
    out.mkdir()
    command = [unpacker, broken, str(layout.frames_offset), str(layout.frames_size), out]
    env = {**os.environ, "LOCKSHIP_UNPACK_THREADS": threads}
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    assert run.returncode == 2
    assert run.stderr.count("\n") == 1 and run.stderr.startswith("lockship-unpack: ")


@pytest.mark.parametrize("name", ["../escaped", "/tmp/absolute", "stub/../../escaped"])
def test_unsafe_names_are_refused(tmp_path: Path, unpacker: Path, name: str) -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.USTAR_FORMAT) as archive:
        info = tarfile.TarInfo(name)
        info.size = 4
        archive.addfile(info, io.BytesIO(b"evil"))
    frames = compress_frames(buffer.getvalue(), frames=1, level=1)
    head = unpacker.read_bytes()
    pack = tmp_path / "evil.pack"
    pack.write_bytes(head + frames + trailer(len(head), len(frames)))
    out = tmp_path / "deep" / "out"
    out.mkdir(parents=True)
    run = subprocess.run(
        [unpacker, pack, str(len(head)), str(len(frames)), out], capture_output=True, text=True
    )
    assert run.returncode == 2
    assert "unsafe path" in run.stderr
    assert list(out.iterdir()) == []
    assert not (tmp_path / "deep" / "escaped").exists() and not (tmp_path / "escaped").exists()


def test_memory_stays_at_a_few_frames_whatever_the_program_size(
    tmp_path: Path, unpacker: Path
) -> None:
    """96 MB of program in 32 frames: at most one frame more than the decoding threads (at
    most 8) is held at a time, so the unpacker never holds the whole program."""
    folder = tmp_path / "big"
    folder.mkdir()
    block = os.urandom(1 << 20)
    with open(folder / "rattler.abi3.so", "wb") as f:
        for i in range(96):
            f.write(block[i:] + block[:i])  # compressible at level 1, but not to nothing
    data = archive_bytes(folder)
    frames = compress_frames(data, frames=32, level=1)
    head = unpacker.read_bytes()
    pack = tmp_path / "big.pack"
    pack.write_bytes(head + frames + trailer(len(head), len(frames)))
    out = tmp_path / "out"
    out.mkdir()
    # the peak of the unpacker alone: a child's ru_maxrss counts what its parent had mapped
    # when it forked, so a small interpreter starts it rather than this test process
    measure = (
        "import os, sys; pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ); "
        "_, status, usage = os.wait4(pid, 0); "
        "print(os.waitstatus_to_exitcode(status), usage.ru_maxrss)"
    )
    command = [sys.executable, "-I", "-c", measure, unpacker, pack]
    command += [str(len(head)), str(len(frames)), out]
    env = {**os.environ, "LOCKSHIP_UNPACK_THREADS": "8"}  # the most it starts: 9 frames held
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    code, peak_kb = run.stdout.split()
    assert code == "0"
    unpacked = out / "stub" / "rattler.abi3.so"
    assert unpacked.read_bytes() == (folder / "rattler.abi3.so").read_bytes()
    peak_mb = int(peak_kb) / 1024  # kB on Linux
    assert peak_mb < 48, f"the unpacker peaked at {peak_mb:.0f} MB for a 96 MB program"


def test_a_folder_without_room_is_refused_before_anything_is_written(
    tmp_path: Path, unpacker: Path, mount_tmpfs: MountTmpfs
) -> None:
    folder = tmp_path / "big"
    folder.mkdir()
    (folder / "rattler.abi3.so").write_bytes(os.urandom(3 << 20))
    pack = tmp_path / "stub.pack"
    write_pack(pack, unpacker, folder)
    layout = read_layout(pack)
    small = mount_tmpfs("1m")
    command = [unpacker, pack, str(layout.frames_offset), str(layout.frames_size), small]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr == (
        "lockship-unpack: not enough room: the program needs 4 MB, 1 MB are free\n"
    )
    assert list(small.iterdir()) == []


def header_command(tmp_path: Path, unpacker: Path, folder: Path) -> list[str | Path]:
    """The unpacker's command line, as the header runs it, for a small program into the new
    ``folder`` (without LOCK_FD)."""
    pack = tmp_path / "stub.pack"
    write_pack(pack, unpacker, program_folder(tmp_path))
    layout = read_layout(pack)
    folder.mkdir()
    return [unpacker, pack, str(layout.frames_offset), str(layout.frames_size), folder]


def run_with_lock(command: list[str | Path], lock: IO[str]) -> subprocess.CompletedProcess[str]:
    """``command`` given the open ``lock`` as its LOCK_FD, as the header's fd 9."""
    fd = lock.fileno()
    return subprocess.run([*command, str(fd)], pass_fds=[fd], capture_output=True, text=True)


def test_with_a_lock_it_removes_only_the_folders_of_installers_killed_outright(
    tmp_path: Path, unpacker: Path
) -> None:
    """A header's folder holds ``.lock``, locked while its program runs; an unpacker given
    its own lock removes the sibling folders whose lock is free and a minute old."""
    base = tmp_path / "tmp"
    base.mkdir()
    hour_ago = time.time() - 3600

    def header_folder(name: str, *, lock: bool = True, age: float = hour_ago) -> Path:
        folder = base / name
        (folder / "stub" / "_internal").mkdir(parents=True)
        (folder / "stub" / "_internal" / "libpython.so").write_bytes(b"x" * 1000)
        (folder / "stub" / "lib").symlink_to(outside)  # removed, not followed
        (folder / "unpack").write_bytes(b"unpacker")
        if lock:
            (folder / ".lock").touch()
            os.utime(folder / ".lock", (age, age))
        return folder

    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("not the installer's")
    killed = header_folder("lockship-Kil1ed00")
    running = header_folder("lockship-Runn1ng0")
    young = header_folder("lockship-Y0ung000", age=time.time())
    unlocked = header_folder("lockship-01dstyle", lock=False)
    other = header_folder("lockship-not-a-header")
    with open(running / ".lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)  # its program is still running
        new = base / "lockship-NewOne00"
        command = header_command(tmp_path, unpacker, new)
        with open(new / ".lock", "a") as lock:
            run = run_with_lock(command, lock)
            assert run.returncode == 0
            # the lock is held (by this open file): another opening of .lock cannot take it
            with open(new / ".lock") as other_opening:
                again = run_with_lock(command, other_opening)
    assert not killed.exists()
    assert {p.name for p in base.iterdir()} == {
        running.name,
        young.name,
        unlocked.name,
        other.name,
        new.name,
    }
    assert (new / "stub" / "lockship-stub").is_file()
    assert (outside / "keep").read_text() == "not the installer's"
    assert again.returncode == 1
    assert again.stderr.startswith("lockship-unpack: cannot lock the folder: ")


def test_the_sweep_does_not_enter_another_file_system(
    tmp_path: Path, unpacker: Path, mount_tmpfs: MountTmpfs
) -> None:
    """A file system mounted inside a killed installer's folder is left alone."""
    mounted = mount_tmpfs("1m")
    (mounted / "keep").write_text("on another file system")
    base = tmp_path / "tmp"
    killed = base / "lockship-Kil1ed00"
    (killed / "stub" / "inside").mkdir(parents=True)
    (killed / "stub" / "file").write_text("the installer's")
    if subprocess.run(["mount", "--bind", mounted, killed / "stub" / "inside"]).returncode:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        (killed / ".lock").touch()
        os.utime(killed / ".lock", (time.time() - 3600,) * 2)
        new = base / "lockship-NewOne00"
        command = header_command(tmp_path, unpacker, new)
        with open(new / ".lock", "a") as lock:
            assert run_with_lock(command, lock).returncode == 0
        assert (killed / "stub" / "inside" / "keep").read_text() == "on another file system"
        assert not (killed / "stub" / "file").exists()
    finally:
        subprocess.run(["umount", "-l", killed / "stub" / "inside"], check=False)


def test_a_folder_it_cannot_fill_exits_1(tmp_path: Path, unpacker: Path) -> None:
    """Not damage: the header tries its next folder."""
    folder = program_folder(tmp_path)
    pack = tmp_path / "stub.pack"
    write_pack(pack, unpacker, folder)
    layout = read_layout(pack)
    out = tmp_path / "out"
    out.mkdir()
    (out / "stub").write_text("in the way")
    command = [unpacker, pack, str(layout.frames_offset), str(layout.frames_size), out]
    run = subprocess.run(command, capture_output=True, text=True)
    assert run.returncode == 1 and "cannot create a folder" in run.stderr


def test_a_file_that_is_not_a_pack_is_refused_with_the_freeze_command(tmp_path: Path) -> None:
    onefile = tmp_path / "lockship-stub-linux-64"
    onefile.write_bytes(b"\x7fELF an old one-file stub" + b"\0" * 100)
    with pytest.raises(StubError, match=r"not a lockship stub pack .*lockship freeze-stub -o PATH"):
        read_layout(onefile)


def test_a_failing_compiler_is_named_with_its_first_error(tmp_path: Path) -> None:
    compiler = tmp_path / "cc"
    compiler.write_text(
        "#!/bin/sh\n"
        '[ "$1" = -dumpmachine ] && { echo x86_64-linux-gnu; exit 0; }\n'
        "echo 'unpack.c:1:1: error: first thing wrong' >&2\n"
        "echo 'unpack.c:9:1: error: what followed from it' >&2\n"
        "echo '   ^~~~' >&2\n"
        "exit 1\n"
    )
    compiler.chmod(0o755)
    with pytest.raises(StubError) as failed:
        compile_unpacker(tmp_path, tmp_path / "out", str(compiler))
    assert str(failed.value) == (
        f"compiling the stub's unpacker with {compiler} failed: "
        "unpack.c:1:1: error: first thing wrong"
    )


def test_no_compiler_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(StubError, match=r"no C compiler \(no-such-cc\) .*xcode-select --install"):
        compile_unpacker(tmp_path, tmp_path / "out", "no-such-cc")
