"""Linux reach, proven on this x86_64 machine: linux-aarch64 installers built here and run under
emulation (qemu-user through binfmt_misc), and linux-64 installers on old glibc (a Debian
bullseye chroot, glibc 2.31).

These tests need what ``scripts/rootfs.py all`` prepares (``.ci/run`` does it when the machine
allows): the arm64 and bullseye root filesystems, the stubs frozen in them and the aarch64
sysroot, in ``$LOCKSHIP_ROOTFS_CACHE`` (default ``~/.cache/lockship/rootfs``). Without them every
test here skips with a one-line reason. See docs/linux-reach.md.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from lockship.builder.stubs.elf import (
    VER_NDX_GLOBAL,
    dynamic_symbols,
    glibc_versions,
    version_needs,
)
from lockship.builder.stubs.pack import host_unpacker, unpack

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)
from tests.runners import Run, load_script, run_installer, run_lockship

pytestmark = pytest.mark.e2e

if DEMO_PLATFORM != "linux-64":
    # The bullseye rootfs is x86_64 and aarch64 is the emulated architecture; besides,
    # scripts/rootfs.py (loaded below) imports fcntl, which Windows lacks.
    pytest.skip(
        f"Linux reach runs on x86_64 Linux (linux-64), not {DEMO_PLATFORM}",
        allow_module_level=True,
    )


rootfs = load_script("rootfs")
CACHE = rootfs.Cache(rootfs.default_cache())
ARM64_ROOT: Path = CACHE.rootfs(rootfs.ARM64)
BULLSEYE_ROOT: Path = CACHE.rootfs(rootfs.BULLSEYE)
ARM64_STUB: Path = CACHE.stub("linux-aarch64")
BULLSEYE_STUB: Path = CACHE.stub("linux-64")
CROSS_GCC = "aarch64-linux-gnu-gcc"
PREPARE = "prepare with: python scripts/rootfs.py all (as root)"
#: the compiled-in prefix of the C program: a binary placeholder, as conda-build leaves them
BUILD_PREFIX = "/tmp/lsarm-build/_h_env" + "_placehold" * 20
HELLO_C = r"""
#include <stdio.h>
int main(void) {
    printf("lsarm-hello from %s\n", INSTALL_PREFIX);
    return 0;
}
"""
PYTHON_WRAPPER = f"""\
#!/bin/sh
# python stand-in for linux-aarch64: the machine's python3 with this prefix's site-packages
PYTHONPATH="{BUILD_PREFIX}/lib/python3.11/site-packages${{PYTHONPATH:+:$PYTHONPATH}}"
export PYTHONPATH
exec /usr/bin/env python3 "$@"
"""
SPECS = ["python", "lsdemo-config", "lsdemo-greet", "lsarm-hello"]


# --- what this machine has -------------------------------------------------------------------


def _machine_reason() -> str | None:
    if os.geteuid() != 0:
        return "not root (chroot and binfmt_misc need root)"
    return None


def _rootfs_reason(spec: Any, stub: Path) -> str | None:
    reason = _machine_reason()
    if reason:
        return reason
    root = CACHE.rootfs(spec)
    if not rootfs.rootfs_ready(CACHE, spec):
        return f"no prepared {root.name} rootfs in {CACHE.root}; {PREPARE}"
    problem = rootfs.stub_state(stub)
    return f"{problem}; {PREPARE}" if problem else None


def _arm64_reason() -> str | None:
    reason = _rootfs_reason(rootfs.ARM64, ARM64_STUB)
    if reason:
        return reason
    entry = rootfs.binfmt_entry()
    if entry is None or entry["enabled"] != "enabled":
        return f"qemu-aarch64 is not enabled in binfmt_misc; {PREPARE}"
    if not rootfs.has_stamp(CACHE.sysroot, "sysroot", rootfs.sysroot_digest(ARM64_ROOT)):
        return f"no aarch64 sysroot in {CACHE.sysroot}; {PREPARE}"
    if not shutil.which(CROSS_GCC):
        return f"no {CROSS_GCC} (Debian's gcc-aarch64-linux-gnu); {PREPARE}"
    return None


@pytest.fixture(scope="module")
def arm64_ready() -> None:
    reason = _arm64_reason()
    if reason:
        pytest.skip(f"Linux reach (aarch64): {reason}")


@pytest.fixture(scope="module")
def bullseye_ready() -> None:
    reason = _rootfs_reason(rootfs.BULLSEYE, BULLSEYE_STUB)
    if reason:
        pytest.skip(f"Linux reach (bullseye): {reason}")


# --- chroots ---------------------------------------------------------------------------------


@dataclass
class Chroot:
    """A mounted rootfs; commands run there as root with a clean environment."""

    root: Path
    work: Path  # this test's folder, as seen inside the chroot

    def host_path(self, inside: str | Path) -> Path:
        return self.root / str(inside).lstrip("/")

    def run(self, *argv: str | Path, timeout: float = 600) -> Run:
        command = rootfs.chroot_command(self.root, [str(a) for a in argv])
        process = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Run(process.returncode, process.stdout, process.stderr)

    def sh(self, script: str) -> Run:
        return self.run("/bin/sh", "-c", script)

    def copy_in(self, path: Path) -> Path:
        """``path`` copied into this test's folder; returns its path inside the chroot."""
        shutil.copy2(path, self.host_path(self.work / path.name))
        return self.work / path.name


def _chroot(root: Path) -> Iterator[Chroot]:
    work = Path("/tmp") / f"lockship-test-{uuid.uuid4().hex[:8]}"
    with rootfs.locked(CACHE.root):
        (root / str(work).lstrip("/")).mkdir(parents=True)
        try:
            with rootfs.chroot_mounts(root):
                yield Chroot(root, work)
        finally:  # after unmounting, and only inside the rootfs' own /tmp
            shutil.rmtree(root / str(work).lstrip("/"), ignore_errors=True)


@pytest.fixture()
def arm64(arm64_ready: None) -> Iterator[Chroot]:
    yield from _chroot(ARM64_ROOT)


@pytest.fixture()
def bullseye(bullseye_ready: None) -> Iterator[Chroot]:
    yield from _chroot(BULLSEYE_ROOT)


def ok(run: Run) -> Run:
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def single_error(run: Run, code: int = 1) -> str:
    assert run.returncode == code, run.stdout + run.stderr
    assert len(run.error_lines) == 1 and "Traceback" not in run.stderr, run.stderr
    return run.error_lines[0]


def elf_machine(path: Path) -> int:
    header = path.read_bytes()[:20]
    assert header[:4] == b"\x7fELF", path
    return int(struct.unpack_from("<H", header, 18)[0])


EM_X86_64, EM_AARCH64 = 62, 183


def glibc_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(x) for x in version.split("."))


# --- a linux-aarch64 installer -----------------------------------------------------------------


@dataclass(frozen=True)
class ArmBuild:
    installer: Path
    program: Path  # the C program as compiled, with the placeholder


@pytest.fixture(scope="module")
def arm64_build(
    arm64_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
    demo_channel: Path,
    download_cache: Path,
) -> ArmBuild:
    """The noarch demo packages, a python stand-in and a C program, for linux-aarch64."""
    base = tmp_path_factory.mktemp("arm64")
    hello_c = base / "hello.c"
    hello_c.write_text(HELLO_C)
    program = base / "lsarm-hello"
    subprocess.run(
        [CROSS_GCC, "-O2", f'-DINSTALL_PREFIX="{BUILD_PREFIX}"', "-o", program, hello_c],
        check=True,
    )
    assert elf_machine(program) == EM_AARCH64
    channel = base / "channel"
    shutil.copytree(demo_channel, channel)
    write_conda_package(
        channel,
        "python",
        "3.11.0",
        subdir="linux-aarch64",
        files={
            "bin/python3.11": PYTHON_WRAPPER,
            "lib/python3.11/site-packages/.keep": "",
        },
        symlinks={"bin/python": "python3.11"},  # the installer compiles .pyc files with it
        text_placeholders={"bin/python3.11": BUILD_PREFIX},
    )
    write_conda_package(
        channel,
        "lsarm-hello",
        "1.0",
        subdir="linux-aarch64",
        files={"bin/lsarm-hello": program.read_bytes()},
        binary_placeholders={"bin/lsarm-hello": BUILD_PREFIX},
        depends=["lsdemo-config"],
    )
    index_channel(channel)
    workspace = base / "workspace"
    workspace.mkdir()
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, "linux-aarch64", SPECS)
        write_pixi_lock(workspace / "pixi.lock", {"linux-aarch64": records}, channel_url=server.url)
        (workspace / "pixi.toml").write_text('[workspace]\nname = "lsarm"\nversion = "1.0"\n')
        result = run_lockship(
            "build",
            workspace,
            "-p",
            "linux-aarch64",
            "--stub-dir",
            CACHE.stubs,
            "-o",
            base / "out",
            "--cache-dir",
            download_cache,
        )
    assert result.returncode == 0, result.stderr
    installer = Path(result.stdout.strip().splitlines()[-1])
    assert installer.name == "lsarm-1.0-linux-aarch64.sh"
    return ArmBuild(installer, program)


@pytest.fixture(scope="module")
def arm64_installer(arm64_build: ArmBuild) -> Path:
    return arm64_build.installer


def test_aarch64_stub_is_the_portable_one(arm64_ready: None, tmp_path: Path) -> None:
    """Frozen from this machine with the portable Python: every ELF file needs glibc 2.17 at
    most, py-rattler's (a manylinux_2_28 wheel) too once the versions only its weak symbols
    need are optional."""
    facts = json.loads(ARM64_STUB.with_name(ARM64_STUB.name + ".json").read_text())
    assert facts["platform"] == "linux-aarch64" and facts["python"].startswith("3.11.")
    assert elf_machine(ARM64_STUB) == EM_AARCH64
    assert facts["glibc"] == "2.17", facts
    unpack(ARM64_STUB, tmp_path / "unpacked", unpacker=host_unpacker())
    needs = {
        p.name: max(glibc_versions(p.read_bytes()), default=None)
        for p in (tmp_path / "unpacked").rglob("*")
        if p.is_file() and not p.is_symlink() and p.read_bytes()[:4] == b"\x7fELF"
    }
    assert {"lockship-stub", "libpython3.11.so.1.0", "rattler.abi3.so"} <= needs.keys()
    assert all(v is not None and v <= (2, 17) for v in needs.values()), needs
    assert not [n for n in needs if n.startswith("libgcc_s")]
    rattler = next((tmp_path / "unpacked").rglob("rattler.abi3.so")).read_bytes()
    # the wheel's GLIBC_2.28 entry is out of libc's chain, and statx bound by name
    glibc_needs = {n.name for n in version_needs(rattler) if n.name.startswith("GLIBC_")}
    assert glibc_needs == {"GLIBC_2.17"}, glibc_needs
    symbols = dynamic_symbols(rattler)
    by_name = {s.name for s in symbols if s.weak and s.undefined and s.version == VER_NDX_GLOBAL}
    assert {"statx", "getrandom"} <= by_name


def test_aarch64_installer_installs_under_emulation(arm64_build: ArmBuild, arm64: Chroot) -> None:
    assert arm64.run("uname", "-m").stdout.strip() == "aarch64"  # everything below is emulated
    installer = arm64.copy_in(arm64_build.installer)
    prefix = arm64.work / "env"
    run = ok(arm64.run("/bin/sh", installer, "-b", "-p", prefix))
    assert "Traceback" not in run.stderr
    host_prefix = arm64.host_path(prefix)
    records = sorted(p.name for p in (host_prefix / "conda-meta").glob("*.json"))
    assert [r.rsplit("-", 2)[0] for r in records] == sorted(SPECS)
    # the binary placeholder: replaced in place, padded with NULs to the same length
    binary = (host_prefix / "bin" / "lsarm-hello").read_bytes()
    assert BUILD_PREFIX.encode() not in binary and str(prefix).encode() + b"\0" in binary
    assert len(binary) == arm64_build.program.stat().st_size
    assert BUILD_PREFIX not in (host_prefix / "bin" / "python3.11").read_text()
    config = (host_prefix / "etc" / "lsdemo" / "config.ini").read_text()
    assert str(prefix) in config
    site = host_prefix / "lib" / "python3.11" / "site-packages"
    assert list(site.glob("lsdemo_greet/__pycache__/__init__.cpython-311.pyc"))  # emulated python
    # the program, the text-placeholder script, the activate.d hook and a noarch entry point
    activated = ok(
        arm64.run(
            "/bin/bash",
            "-c",
            f'. "{prefix}/activate.sh" && lsarm-hello && lsdemo-where && '
            'echo "activated=$LSDEMO_ACTIVATED" && lsdemo-greet',
        )
    )
    assert activated.stdout.splitlines() == [
        f"lsarm-hello from {prefix}",
        f"prefix={prefix}",
        "activated=yes",
        "greetings from lsdemo_greet",
    ]


def test_aarch64_exit_codes_and_errors_match_linux_64(arm64_installer: Path, arm64: Chroot) -> None:
    installer = arm64.copy_in(arm64_installer)
    version = ok(arm64.run("/bin/sh", installer, "--version"))
    assert version.stdout.startswith("lsarm 1.0 (installer built by lockship ")
    info = ok(arm64.run("/bin/sh", installer, "--info"))
    assert "platform:          linux-aarch64" in info.stdout
    bogus = arm64.run("/bin/sh", installer, "--bogus")
    assert single_error(bogus, 2).startswith("ERROR: unrecognized arguments: --bogus")
    prefix = arm64.work / "taken"
    arm64.host_path(prefix).mkdir()
    (arm64.host_path(prefix) / "keep.txt").write_text("mine")
    refused = arm64.run("/bin/sh", installer, "-b", "-p", prefix)
    assert f"the prefix {prefix} exists and is not empty" in single_error(refused)
    assert sorted(p.name for p in arm64.host_path(prefix).iterdir()) == ["keep.txt"]
    not_a_folder = arm64.work / "file"
    arm64.host_path(not_a_folder).write_text("x")
    single_error(arm64.run("/bin/sh", installer, "-b", "-p", not_a_folder))
    assert arm64.host_path(not_a_folder).read_text() == "x"


def test_aarch64_programs_run_from_the_host_with_the_sysroot(
    arm64_ready: None, arm64_installer: Path, tmp_path: Path
) -> None:
    """Without a chroot: binfmt runs arm64 binaries, QEMU_LD_PREFIX supplies their libraries.

    The header checks ``uname -m``, so on the host the stub is run as the header would run it.
    """
    header = arm64_installer.read_bytes()[:8192].decode("utf-8", "replace")
    offset = int(header.split("LOCKSHIP_STUB_OFFSET=")[1].split()[0])
    unpacker_size = int(header.split("LOCKSHIP_UNPACKER_SIZE=")[1].split()[0])
    frames_size = int(header.split("LOCKSHIP_FRAMES_SIZE=")[1].split()[0])
    unpacker = tmp_path / "unpack"
    with open(arm64_installer, "rb") as f:
        f.seek(offset)
        unpacker.write_bytes(f.read(unpacker_size))
    unpacker.chmod(0o755)
    assert elf_machine(unpacker) == EM_AARCH64
    env = {
        **os.environ,
        "QEMU_LD_PREFIX": str(CACHE.sysroot),
        "_LOCKSHIP_INSTALLER": str(arm64_installer),
    }
    folder = tmp_path / "unpacked"
    folder.mkdir()
    command = [unpacker, arm64_installer, str(offset + unpacker_size), str(frames_size), folder]
    subprocess.run(command, env=env, check=True, timeout=600)
    stub = folder / "stub" / "lockship-stub"
    assert elf_machine(stub) == EM_AARCH64
    prefix = tmp_path / "env"
    process = subprocess.run(
        [stub, "-b", "-p", prefix], capture_output=True, text=True, env=env, timeout=600
    )
    assert process.returncode == 0, process.stderr
    hello = subprocess.run(
        [prefix / "bin" / "lsarm-hello"], capture_output=True, text=True, env=env, check=True
    )
    assert hello.stdout == f"lsarm-hello from {prefix}\n"


def test_aarch64_installer_refuses_x86_64_with_one_line(arm64_installer: Path) -> None:
    run = run_installer(arm64_installer, "-b", "-p", "/nonexistent/never")
    assert single_error(run) == (
        "ERROR: this installer is for linux-aarch64 but this machine is Linux x86_64; "
        "download the installer for this machine"
    )


# --- old glibc: a bullseye chroot --------------------------------------------------------------


def test_bullseye_stub_needs_at_most_glibc_2_31(bullseye_ready: None) -> None:
    facts = json.loads(BULLSEYE_STUB.with_name(BULLSEYE_STUB.name + ".json").read_text())
    assert facts["platform"] == "linux-64"
    assert elf_machine(BULLSEYE_STUB) == EM_X86_64
    assert facts["glibc"] and glibc_tuple(facts["glibc"]) <= (2, 31), facts
    assert facts["python"].startswith("3.11.")


@pytest.fixture(scope="module")
def bullseye_installer(
    bullseye_ready: None,
    tmp_path_factory: pytest.TempPathFactory,
    demo_lock: Path,
    download_cache: Path,
) -> Path:
    """The demo installer, built with the stub frozen on bullseye (from the stub folder)."""
    out = tmp_path_factory.mktemp("bullseye-installer")
    # the bullseye stub needs glibc 2.30, above the demo lock's floor (pixi's default 2.28)
    result = run_lockship(
        "build",
        demo_lock,
        "-o",
        out,
        "--stub-dir",
        CACHE.stubs,
        "--cache-dir",
        download_cache,
        "--allow-newer-glibc",
    )
    assert result.returncode == 0, result.stderr
    installer = Path(result.stdout.strip().splitlines()[-1])
    header = installer.read_bytes()[:4096]
    assert b"LOCKSHIP_GLIBC_MIN=2." in header
    return installer


def test_installer_with_bullseye_stub_installs_on_glibc_2_31(
    bullseye_installer: Path, bullseye: Chroot, tmp_path: Path
) -> None:
    assert bullseye.run("getconf", "GNU_LIBC_VERSION").stdout.strip() == "glibc 2.31"
    installer = bullseye.copy_in(bullseye_installer)
    prefix = bullseye.work / "env"
    run = ok(bullseye.run("/bin/sh", installer, "-b", "-p", prefix))
    assert "Traceback" not in run.stderr
    host_prefix = bullseye.host_path(prefix)
    names = {p.name.rsplit("-", 2)[0] for p in (host_prefix / "conda-meta").glob("*.json")}
    assert names == {"python", "lsdemo-hello", "lsdemo-config", "lsdemo-greet"}
    # (lsdemo-hello itself was compiled on this machine, for glibc 2.34+: not run there)
    activated = ok(
        bullseye.sh(
            f'. "{prefix}/activate.sh" && lsdemo-where && echo "a=$LSDEMO_ACTIVATED" && '
            "lsdemo-greet"
        )
    )
    assert activated.stdout.splitlines() == [
        f"prefix={prefix}",
        "a=yes",
        "greetings from lsdemo_greet",
    ]
    # the same installer on this machine's newer glibc
    host = tmp_path / "env"
    ok(run_installer(bullseye_installer, "-b", "-p", host))
    hello = subprocess.run([host / "bin" / "lsdemo-hello"], capture_output=True, text=True)
    assert hello.stdout.strip() == f"lsdemo-hello from {host}"
