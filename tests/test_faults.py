"""The fault suite: bad input and hostile conditions for the installer and the builder.

Every case asserts a one-line error (no traceback on the console), the exit code, and that
nothing was left behind: no prefix if the installer created it, no file outside the prefix, no
installer under its final name.
"""

from __future__ import annotations

import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lockship.builder.output.installer import write_installer
from lockship.stub.shared.manifest import Manifest, PackageInfo
from lockship.stub.shared.payload import TRAILER_SIZE, read_payload

from tests.conftest import DEMO_PLATFORM, InstallerFactory, MountTmpfs
from tests.factories import (
    ChannelServer,
    channel_records,
    write_conda_package,
    write_pixi_lock,
    write_stand_in_stub,
)
from tests.runners import Run, run_installer, run_lockship, start_until_asleep

pytestmark = pytest.mark.e2e


def one_error(run: Run, code: int = 1) -> str:
    assert run.returncode == code, run.stdout + run.stderr
    assert len(run.error_lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    return run.error_lines[0]


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


# --- 1-3: damaged installer files ----------------------------------------------------------


@pytest.mark.parametrize("where", ["stub", "payload", "trailer"])
def test_truncated_installer(tmp_path: Path, demo_installer: Path, where: str) -> None:
    payload = read_payload(demo_installer)
    size = demo_installer.stat().st_size
    cut = {
        "stub": payload.payload_offset // 2,
        "payload": (payload.payload_offset + payload.index_offset) // 2,
        "trailer": size - TRAILER_SIZE // 2,
    }[where]
    truncated = tmp_path / "truncated.sh"
    truncated.write_bytes(demo_installer.read_bytes()[:cut])
    prefix = tmp_path / "env"
    line = one_error(run_installer(truncated, "-b", "-p", prefix))
    assert "is damaged" in line and "download it again" in line
    assert not prefix.exists()


def test_flipped_index_byte(tmp_path: Path, demo_installer: Path) -> None:
    data = bytearray(demo_installer.read_bytes())
    data[len(data) - TRAILER_SIZE - 20] ^= 0x01
    damaged = tmp_path / "damaged.sh"
    damaged.write_bytes(bytes(data))
    line = one_error(run_installer(damaged, "-b", "-p", tmp_path / "env"))
    assert "does not match its checksum" in line and "download the installer again" in line
    assert not (tmp_path / "env").exists()


def test_newer_payload_format(tmp_path: Path, demo_installer: Path) -> None:
    data = bytearray(demo_installer.read_bytes())
    data[-12:-8] = struct.pack("<I", 3)
    newer = tmp_path / "newer.sh"
    newer.write_bytes(bytes(data))
    line = one_error(run_installer(newer, "-b", "-p", tmp_path / "env"))
    assert "payload format 3 is newer than this installer understands (1)" in line
    assert not (tmp_path / "env").exists()


# --- 4: archives that would escape the prefix ----------------------------------------------

ESCAPES = {
    "dotdot": [("file", "../escape.txt", "e")],
    "absolute": [("file", "/tmp/lockship-absolute-escape.txt", "a")],
    "symlink-write-through": [
        ("symlink", "lib/evil", "{outside}"),
        ("file", "lib/evil/pwned.txt", "gotcha"),
    ],
}


def escaping_members(kind: str, outside: Path) -> list[tuple[str, ...]]:
    return [tuple(m.replace("{outside}", str(outside)) for m in raw) for raw in ESCAPES[kind]]


@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_builder_refuses_escaping_archives(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory, kind: str
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    members = escaping_members(kind, outside)
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    write_conda_package(channel, "evil", "1.0", files={"ok.txt": "x"}, raw_members=members)
    from tests.factories import index_channel

    index_channel(channel)
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, DEMO_PLATFORM)
        write_pixi_lock(tmp_path / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=server.url)
        result = run_lockship(
            "build",
            tmp_path,
            "--stub",
            installer_factory.stub,
            "-o",
            tmp_path / "out",
            "--cache-dir",
            tmp_path / "cache",
        )
    assert result.returncode == 1, result.stderr
    line = next(ln for ln in result.stderr.splitlines() if ln.startswith("ERROR:"))
    assert "evil-1.0-0.conda is unsafe to install" in line
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("kind", sorted(ESCAPES))
def test_installer_never_writes_outside_the_prefix(
    tmp_path: Path, demo_installer: Path, installer_factory: InstallerFactory, kind: str
) -> None:
    """Even a payload that skipped the builder's check cannot write outside the prefix."""
    outside = tmp_path / "outside"
    outside.mkdir()
    members = escaping_members(kind, outside)
    archive = write_conda_package(
        tmp_path / "ch", "evil", "1.0", files={"ok.txt": "x"}, raw_members=members
    )
    base = Manifest.from_dict(read_payload(demo_installer).metadata)
    import hashlib

    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    record = {
        "name": "evil",
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "depends": [],
        "subdir": "noarch",
        "sha256": sha,
        "size": archive.stat().st_size,
    }
    evil = PackageInfo(
        entry=f"noarch/{archive.name}",
        file_name=archive.name,
        name="evil",
        version="1.0",
        build="0",
        subdir="noarch",
        url=f"https://example.invalid/noarch/{archive.name}",
        channel="https://example.invalid",
        sha256=sha,
        size=archive.stat().st_size,
        record=record,
    )
    manifest = Manifest(
        name="evil",
        version="1",
        platform=DEMO_PLATFORM,  # else the header refuses it before anything is unpacked
        environment="default",
        lockship_version=base.lockship_version,
        packages=(evil,),
    )
    installer = write_installer(
        tmp_path / "evil.sh", installer_factory.stub, manifest, [(evil.entry, archive)]
    ).path
    before = listing(tmp_path)
    prefix = tmp_path / "env"
    run = run_installer(installer, "-b", "-p", prefix)
    assert run.returncode in (0, 1), run.stderr
    assert "Traceback" not in run.stderr
    if run.returncode:
        one_error(run)
        assert not prefix.exists()
    else:
        assert prefix.is_dir()
        assert not (prefix / "lib" / "evil" / "pwned.txt").exists() or (
            prefix / "lib" / "evil"
        ).resolve().is_relative_to(prefix)
    after = [p for p in listing(tmp_path) if not p.startswith("env")]
    assert after == before
    assert list(outside.iterdir()) == []
    assert not Path("/tmp/lockship-absolute-escape.txt").exists()


# --- 5-6: prefixes ---------------------------------------------------------------------------


def test_read_only_parent(tmp_path: Path, demo_installer: Path) -> None:
    """Run as an unprivileged user: a parent folder it cannot write is refused up front."""
    if os.geteuid() != 0 or not shutil.which("setpriv"):
        pytest.skip("needs root and setpriv to run the installer as another user")
    if os.environ.get("LOCKSHIP_TEST_STUB") == "python":
        pytest.skip("the python stand-in stub is not usable by another user")
    shared = Path(tempfile.mkdtemp(prefix="lockship-ro-"))
    try:
        shared.chmod(0o755)
        installer = shared / demo_installer.name
        shutil.copyfile(demo_installer, installer)
        installer.chmod(0o755)
        home = shared / "home"
        home.mkdir()
        os.chown(home, 65534, 65534)
        parent = shared / "readonly"
        parent.mkdir(mode=0o755)
        process = subprocess.run(
            [
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "bash",
                installer,
                "-b",
                "-p",
                parent / "env",
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "HOME": str(home), "TMPDIR": str(home)},
            timeout=300,
        )
        run = Run(process.returncode, process.stdout, process.stderr)
        line = one_error(run)
        assert (
            f"cannot create the prefix {parent / 'env'}: no permission to write in {parent}" in line
        )
        assert list(parent.iterdir()) == []
    finally:
        shutil.rmtree(shared, ignore_errors=True)


# --- 7: disk full --------------------------------------------------------------------------


def test_disk_fills_up_mid_install(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory, mount_tmpfs: MountTmpfs
) -> None:
    channel = installer_factory.channel_with(
        demo_channel,
        {"name": "big", "version": "1.0", "files": {"share/big.bin": os.urandom(3_000_000)}},
    )
    installer = installer_factory.build(channel)
    small = mount_tmpfs("2m")
    prefix = small / "env"
    run = run_installer(installer, "-b", "-p", prefix, env={"LOCKSHIP_SKIP_DISK_CHECK": "1"})
    line = one_error(run)
    assert "No space left on device" in line and "free some space" in line
    assert "nothing was left behind" in line
    assert list(small.iterdir()) == []
    assert shutil.disk_usage(small).used < 100_000  # the space was released


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers unpack on Linux")
def test_the_disk_budget_counts_what_the_route_writes(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory, mount_tmpfs: MountTmpfs
) -> None:
    """Workers write no archive copies, so they need the unpacked size only; copies need both."""
    channel = installer_factory.channel_with(
        demo_channel,
        {"name": "big", "version": "1.0", "files": {"share/big.bin": os.urandom(3_000_000)}},
    )
    installer = installer_factory.build(channel)
    roomy = mount_tmpfs("6m")
    copies = run_installer(
        installer, "-b", "-p", roomy / "copies", env={"LOCKSHIP_UNPACK_WORKERS": "0"}
    )
    assert f"not enough free disk space for {roomy / 'copies'}: needs " in one_error(copies)
    assert list(roomy.iterdir()) == []
    workers = run_installer(
        installer, "-b", "-p", roomy / "workers", env={"LOCKSHIP_UNPACK_WORKERS": "2"}
    )
    assert workers.returncode == 0, workers.stderr
    assert (roomy / "workers" / "share" / "big.bin").stat().st_size == 3_000_000


def test_a_bad_worker_count_fails_before_the_prefix_exists(
    tmp_path: Path, demo_installer: Path
) -> None:
    prefix = tmp_path / "env"
    run = run_installer(demo_installer, "-b", "-p", prefix, env={"LOCKSHIP_UNPACK_WORKERS": "x"})
    line = one_error(run)
    message = "LOCKSHIP_UNPACK_WORKERS must be a number from 0 to 64, not 'x'"
    assert line.startswith(f"ERROR: {message} (details: ")
    assert not prefix.exists()


# --- 8-9: signals and concurrency ------------------------------------------------------------

SLOW_POST_LINK = 'touch "$PREFIX/.slow-started"\nsleep 4\n'


@pytest.fixture(scope="module")
def slow_installer(demo_channel: Path, installer_factory: InstallerFactory) -> Path:
    channel = installer_factory.channel_with(
        demo_channel,
        {"name": "slow", "version": "1.0", "files": {"bin/.slow-post-link.sh": SLOW_POST_LINK}},
    )
    return installer_factory.build(channel)


def start_installer(installer: Path, *args: str | Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        ["bash", str(installer), *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
    )


def wait_for(path: Path, process: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if process.poll() is not None:
            out, err = process.communicate()
            pytest.fail(f"installer ended early: {out}{err}")
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"{path} never appeared")
        time.sleep(0.05)


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_signal_mid_linking_rolls_back(
    tmp_path: Path, slow_installer: Path, sig: signal.Signals, code: int
) -> None:
    prefix = tmp_path / "env"
    process = start_installer(slow_installer, "-b", "-p", prefix)
    wait_for(prefix / ".slow-started", process)
    process.send_signal(sig)
    out, err = process.communicate(timeout=60)
    run = Run(process.returncode, out, err)
    line = one_error(run, code=code)
    assert f"interrupted by {sig.name}" in line
    assert not prefix.exists()
    assert listing(tmp_path) == []


def process_group(pgid: int) -> dict[int, int]:
    """The processes still in process group ``pgid``: pid -> parent pid."""
    members = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            members[int(stat.parent.name)] = int(fields[1])
    return members


@pytest.fixture(scope="module")
def bulky_installer(demo_channel: Path, installer_factory: InstallerFactory) -> Path:
    """Four packages of 20 MB of random files: unpacking them takes a moment."""
    bulk = [
        {
            "name": f"bulk{i}",
            "version": "1.0",
            "files": {f"share/bulk{i}/{j}.bin": os.urandom(500_000) for j in range(40)},
        }
        for i in range(4)
    ]
    return installer_factory.build(installer_factory.channel_with(demo_channel, *bulk))


def start_unpacking(installer: Path, prefix: Path) -> subprocess.Popen[str]:
    """Start an installer in its own process group; return once a worker is unpacking."""
    process = subprocess.Popen(
        ["bash", str(installer), "-b", "-p", str(prefix)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    cache = prefix / ".lockship-stage" / "cache"
    deadline = time.monotonic() + 60
    while not (cache.is_dir() and any(cache.iterdir())):
        assert process.poll() is None and time.monotonic() < deadline, "no worker ever unpacked"
        time.sleep(0.005)
    return process


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers unpack on Linux")
def test_signal_mid_unpacking_rolls_back_and_stops_the_workers(
    tmp_path: Path, bulky_installer: Path
) -> None:
    prefix = tmp_path / "env"
    process = start_unpacking(bulky_installer, prefix)
    os.killpg(process.pid, signal.SIGINT)  # as Ctrl-C on a terminal: the whole group
    out, err = process.communicate(timeout=60)
    line = one_error(Run(process.returncode, out, err), code=130)
    assert "interrupted by SIGINT" in line
    assert not prefix.exists()
    assert listing(tmp_path) == []
    assert process_group(process.pid) == {}  # no worker outlives the installer


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="workers unpack on Linux")
def test_workers_die_with_an_installer_killed_outright(
    tmp_path: Path, bulky_installer: Path
) -> None:
    process = start_unpacking(bulky_installer, tmp_path / "env")
    group = process_group(process.pid)
    # the installer proper: the workers' parent (the header exec'd it, so it is the group's
    # leader)
    installer = next(parent for pid, parent in group.items() if pid not in group.values())
    os.kill(installer, signal.SIGKILL)
    process.communicate(timeout=60)  # returns once no process holds its output open
    deadline = time.monotonic() + 10
    while process_group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert process_group(process.pid) == {}


def test_the_folder_of_an_installer_killed_outright_goes_with_the_next_installer(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory, demo_installer: Path
) -> None:
    """Its program held the folder's lock; once nothing holds it, the next unpacking beside it
    removes the folder (a running installer's stays), and with it the temporary files of the
    program and its scripts: nothing is left in TMPDIR."""
    asleep = 'mkdir -p "$PREFIX/share" && touch "$PREFIX/share/asleep" && sleep 60\n'
    sleepy = {"name": "sleepy", "version": "1.0", "files": {"bin/.sleepy-post-link.sh": asleep}}
    sleeping = installer_factory.build(installer_factory.channel_with(demo_channel, sleepy))
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {"TMPDIR": str(tmp)}
    process = start_until_asleep(sleeping, tmp_path / "sleeping", env=env)
    [folder] = tmp.iterdir()
    # rattler runs the post-link script from a temporary file: in the folder's TMPDIR
    assert [p.suffix for p in (folder / "tmp").iterdir()] == [".sh"]
    an_hour_ago = time.time() - 3600
    os.utime(folder / ".lock", (an_hour_ago, an_hour_ago))  # older than any unpacking
    assert run_installer(demo_installer, "-b", "-p", tmp_path / "b", env=env).returncode == 0
    assert list(tmp.iterdir()) == [folder]  # still running: its folder stays

    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    deadline = time.monotonic() + 10
    while process_group(process.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (folder / "stub").is_dir()  # nothing could remove it
    assert run_installer(demo_installer, "-b", "-p", tmp_path / "c", env=env).returncode == 0
    assert list(tmp.iterdir()) == []


def test_a_first_install_killed_outright_is_cleared_by_the_next_run(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    asleep = 'mkdir -p "$PREFIX/share" && touch "$PREFIX/share/asleep" && sleep 60\n'
    sleepy = {"name": "sleepy", "version": "1.0", "files": {"bin/.sleepy-post-link.sh": asleep}}
    channel = installer_factory.channel_with(demo_channel, sleepy)
    sleeping = installer_factory.build(channel)
    plain = installer_factory.build(channel, specs=["lsdemo-hello"])
    prefix = tmp_path / "new" / "env"
    process = start_until_asleep(sleeping, prefix)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate(timeout=60)
    assert (prefix / "share" / "asleep").exists()  # half installed

    run = run_installer(plain, "-b", "-p", prefix)  # no -f: its own leftovers are not in the way
    assert run.returncode == 0, run.stderr
    assert f"An install into {prefix} was interrupted; removed what it had written" in run.stderr
    assert not (prefix / "share" / "asleep").exists()
    hello = subprocess.run([prefix / "bin" / "lsdemo-hello"], capture_output=True, text=True)
    assert hello.stdout.strip() == f"lsdemo-hello from {prefix}"


def test_an_update_whose_restore_fails_says_to_recover_and_recover_finishes_it(
    tmp_path: Path, demo_channel: Path, installer_factory: InstallerFactory
) -> None:
    script = tmp_path / "stuck.sh"
    # leaves a file the restore cannot remove (the immutable flag binds root too), then fails
    script.write_text('echo x > "$PREFIX/stuck.txt"\nchattr +i "$PREFIX/stuck.txt"\nexit 1\n')
    v1 = installer_factory.build(demo_channel)
    v2 = installer_factory.build(demo_channel, "--post-install", script)
    prefix = tmp_path / "env"
    assert run_installer(v1, "-b", "-p", prefix).returncode == 0
    before = listing(prefix)
    try:
        line = one_error(run_installer(v2, "-b", "-u", "-p", prefix))
    finally:
        subprocess.run(["chattr", "-i", prefix / "stuck.txt"], check=False)
    assert line.startswith(
        "ERROR: the post-install script post-install.sh failed with exit code 1; "
    ), line
    assert (
        f"restoring the previous state failed too: Operation not permitted ({prefix}/stuck.txt), "
        f"so the environment at {prefix} is half-restored; fix that, then run "
        f"`{v2.name} --recover -p {prefix}` to finish restoring it"
    ) in line
    run = run_installer(v2, "--recover", "-p", prefix)
    assert run.returncode == 0, run.stderr
    assert f"An update of {prefix} was interrupted; restored the environment" in run.stderr
    assert listing(prefix) == before


@pytest.mark.skipif(
    not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("unshare"),
    reason="needs Linux, root and unshare to hide /dev/shm",
)
def test_no_shared_memory_for_workers_still_installs(tmp_path: Path, demo_installer: Path) -> None:
    """Worker processes need /dev/shm for their locks; without it rattler unpacks instead."""
    prefix = tmp_path / "env"
    hide_shm = 'mount -t tmpfs -o ro tmpfs /dev/shm && exec bash "$0" -b -p "$1"'
    process = subprocess.run(
        ["unshare", "--mount", "sh", "-c", hide_shm, str(demo_installer), str(prefix)],
        capture_output=True,
        text=True,
        stdin=subprocess.DEVNULL,
        timeout=300,
    )
    assert process.returncode == 0, process.stderr
    assert "Unpacking without worker processes (cannot start worker processes: " in process.stderr
    assert (prefix / "bin" / "lsdemo-hello").is_file()
    assert not (prefix / ".lockship-stage").exists()


def test_second_installer_into_the_same_prefix_refuses(
    tmp_path: Path, slow_installer: Path
) -> None:
    prefix = tmp_path / "env"
    first = start_installer(slow_installer, "-b", "-p", prefix)
    wait_for(prefix / ".slow-started", first)
    for args in (["-b"], ["-b", "-f"]):
        second = run_installer(slow_installer, *args, "-p", prefix)
        line = one_error(second)
        assert f"another installer is installing into {prefix} right now" in line
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, out + err
    assert out.strip().endswith(f"(activate: source {prefix}/activate.sh)")
    assert (prefix / "conda-meta" / "lockship").is_file()
    hello = subprocess.run([prefix / "bin" / "lsdemo-hello"], capture_output=True, text=True)
    assert hello.stdout.strip() == f"lsdemo-hello from {prefix}"


# --- 10: temporary folders -------------------------------------------------------------------


def test_unwritable_tmpdir(tmp_path: Path, demo_installer: Path) -> None:
    prefix = tmp_path / "env"
    run = run_installer(demo_installer, "-b", "-p", prefix, env={"TMPDIR": "/proc/self"})
    assert run.returncode == 0, run.stderr
    assert (prefix / "bin" / "lsdemo-hello").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["env"]  # its temporary folder is gone


def test_noexec_tmpdir(tmp_path: Path, demo_installer: Path, mount_tmpfs: MountTmpfs) -> None:
    noexec = mount_tmpfs("200m", "noexec")
    prefix = tmp_path / "apps" / "env"
    prefix.parent.mkdir()
    run = run_installer(demo_installer, "-b", "-p", prefix, env={"TMPDIR": str(noexec)})
    assert run.returncode == 0, run.stderr
    assert (prefix / "bin" / "lsdemo-hello").exists()
    assert list(noexec.iterdir()) == []
    assert [p.name for p in prefix.parent.iterdir()] == ["env"]


def test_a_tmpdir_without_room_is_passed_over_not_filled(
    tmp_path: Path, demo_installer: Path, mount_tmpfs: MountTmpfs
) -> None:
    small = mount_tmpfs("8m")  # the program takes ~75 MB
    prefix = tmp_path / "apps" / "env"
    prefix.parent.mkdir()
    run = run_installer(demo_installer, "-b", "-p", prefix, env={"TMPDIR": str(small)})
    assert run.returncode == 0, run.stderr
    assert (prefix / "bin" / "lsdemo-hello").exists()
    assert list(small.iterdir()) == []
    assert [p.name for p in prefix.parent.iterdir()] == ["env"]


def test_no_folder_for_the_program_names_each_folder_tried_and_why(
    demo_installer: Path, mount_tmpfs: MountTmpfs
) -> None:
    small_tmp, small_home, apps = mount_tmpfs("8m"), mount_tmpfs("8m"), mount_tmpfs("8m")
    shipped = mount_tmpfs("64m")
    installer = shipped / demo_installer.name
    shutil.copy2(demo_installer, installer)
    subprocess.run(["mount", "-o", "remount,ro", shipped], check=True)
    env = {"TMPDIR": str(small_tmp), "HOME": str(small_home)}
    run = run_installer(installer, "-b", "-p", apps / "env", env=env)
    line = one_error(run)
    assert line.startswith("ERROR: no folder to unpack the installer program into (tried ")
    for folder in (small_tmp, apps, small_home):
        assert f" {folder}: not enough room: the program needs " in line
        assert list(folder.iterdir()) == []
    assert f" {shipped}: cannot make a folder there" in line
    assert line.endswith("set TMPDIR to one")


# --- builder -------------------------------------------------------------------------------


@pytest.fixture
def served_lock(tmp_path: Path, demo_channel: Path) -> Iterator[tuple[ChannelServer, Path, str]]:
    with ChannelServer(demo_channel) as server:
        records = channel_records(demo_channel, server.url, DEMO_PLATFORM)
        write_pixi_lock(tmp_path / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=server.url)
        victim = max(records, key=lambda r: r.size or 0)
        yield server, tmp_path, f"{victim.subdir}/{victim.file_name}"


def build(lock_dir: Path, stub: Path, *args: str | Path) -> Run:
    return run_lockship(
        "build",
        lock_dir,
        "--stub",
        stub,
        "-o",
        lock_dir / "out",
        "--cache-dir",
        lock_dir / "cache",
        *args,
        timeout=120,
    )


@pytest.mark.parametrize("fault", ["truncated", "500", "hang"])
def test_download_faults(
    served_lock: tuple[ChannelServer, Path, str], frozen_stub: Path, fault: str
) -> None:
    server, folder, path = served_lock
    if fault == "truncated":
        server.truncate[path] = 100
    elif fault == "500":
        server.status_overrides[path] = 500
    else:
        server.hang[path] = 60
    started = time.monotonic()
    run = build(folder, frozen_stub, "--timeout", "3", "--retries", "0")
    line = one_error(run)
    assert f"downloading {server.url}/{path} failed" in line
    assert time.monotonic() - started < 50
    assert not (folder / "out").exists() or list((folder / "out").iterdir()) == []
    assert not [
        p
        for p in (folder / "cache").rglob("*")
        if p.is_file() and p.suffix == ".conda" and p.name in path
    ]


def test_full_output_disk_leaves_no_installer(
    served_lock: tuple[ChannelServer, Path, str], frozen_stub: Path, mount_tmpfs: MountTmpfs
) -> None:
    _, folder, _ = served_lock
    small = mount_tmpfs("1m")
    big_stub = write_stand_in_stub(folder / "big-stub", b"\x7fELF" + os.urandom(2_000_000))
    run = run_lockship(
        "build", folder, "--stub", big_stub, "-o", small, "--cache-dir", folder / "cache"
    )
    line = one_error(run)
    assert f"cannot write the installer {small}" in line and "No space left on device" in line
    assert list(small.iterdir()) == []


def test_two_builds_share_one_cache(
    served_lock: tuple[ChannelServer, Path, str], frozen_stub: Path
) -> None:
    server, folder, _ = served_lock
    server.delay = 0.2  # keep both builds downloading at the same time
    processes = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "builder.cli",
                "build",
                str(folder),
                "--stub",
                str(frozen_stub),
                "-o",
                str(folder / f"out{n}"),
                "--cache-dir",
                str(folder / "cache"),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in (1, 2)
    ]
    results = [p.communicate(timeout=300) for p in processes]
    for process, (_, err) in zip(processes, results, strict=True):
        assert process.returncode == 0, err
    installers = [Path(out.strip().splitlines()[-1]) for out, _ in results]
    assert installers[0].read_bytes()[-4096:] == installers[1].read_bytes()[-4096:]
    assert not list((folder / "cache").rglob("*.part"))
    third = build(folder, frozen_stub)
    assert third.returncode == 0 and "0 downloaded" in third.stderr
