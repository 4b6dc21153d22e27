"""Installers on glibc 2.28 (RHEL 8 / Debian 10 and pixi's default ``__glibc``), proven here.

``../shared/oldglibc/`` holds a root filesystem whose only C library is glibc 2.28 and whose
only userland is a static busybox (``sh`` is busybox's ash; there is no bash), and ``run-in``,
which runs a command chrooted into it. An installer that ``lockship build`` writes the default
way (the portable stub, glibc 2.17) must install there and run its programs; one whose stub was
frozen with this machine's own Python must be refused at build time, and if built anyway
(``--allow-newer-glibc``) refused there with one line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from lockship.builder.output.sbom import sbom_path
from lockship.builder.stubs.elf import glibc_versions, relax_optional_glibc
from lockship.builder.stubs.facts import stub_facts

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)
from tests.runners import REPO_ROOT, Run, run_lockship

pytestmark = pytest.mark.e2e

#: ``shared/oldglibc`` beside the checkout (CI: beside the clone) or beside a folder above it
OLDGLIBC = next(
    (p / "shared" / "oldglibc" for p in REPO_ROOT.parents if (p / "shared" / "oldglibc").is_dir()),
    REPO_ROOT.parent / "shared" / "oldglibc",
)
ROOT_TARBALL = OLDGLIBC / "glibc-2.28-x86_64-root.tar.zst"
RUN_IN = OLDGLIBC / "run-in"
#: the compiled-in prefix of the C program: a binary placeholder, as conda-build leaves them
BUILD_PREFIX = "/tmp/lsold-build/_h_env" + "_placehold" * 20
HELLO_C = r"""
#include <stdio.h>
int main(void) {
    printf("lsold-hello from %s\n", INSTALL_PREFIX);
    return 0;
}
"""
SPECS = ["lsdemo-config", "lsold-hello"]


def _reason() -> str | None:
    if DEMO_PLATFORM != "linux-64":
        return f"the glibc 2.28 root is x86_64 (linux-64), this is {DEMO_PLATFORM}"
    if os.geteuid() != 0:
        return "not root (run-in chroots)"
    if not ROOT_TARBALL.is_file() or not RUN_IN.is_file():
        return f"no {ROOT_TARBALL} and run-in beside it"
    if not shutil.which("zstd") or not shutil.which("unshare"):
        return "no zstd or unshare to unpack and enter the root"
    return None


@pytest.fixture(scope="module")
def old_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    reason = _reason()
    if reason:
        pytest.skip(f"glibc 2.28 root: {reason}")
    root = tmp_path_factory.mktemp("glibc-2.28-root")
    unpacked = subprocess.run(
        f'zstd -dc "{ROOT_TARBALL}" | tar -x -C "{root}"', shell=True, check=False
    )
    assert unpacked.returncode == 0
    return root


@dataclass
class OldRoot:
    root: Path
    work: str  # this test's folder inside the root

    def host(self, inside: str) -> Path:
        return self.root / inside.lstrip("/")

    def run(self, *argv: str, timeout: float = 300) -> Run:
        process = subprocess.run(
            [
                "bash",
                str(RUN_IN),
                str(self.root),
                "/usr/bin/env",
                "-i",
                "PATH=/bin:/usr/bin",
                "HOME=/root",
                "TMPDIR=/tmp",
                *argv,
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )
        return Run(process.returncode, process.stdout, process.stderr)

    def sh(self, script: str) -> Run:
        return self.run("/bin/sh", "-c", script)

    def copy_in(self, path: Path) -> str:
        shutil.copy2(path, self.host(f"{self.work}/{path.name}"))
        return f"{self.work}/{path.name}"


@pytest.fixture()
def old(old_root: Path) -> Iterator[OldRoot]:
    work = f"/tmp/lockship-test-{uuid.uuid4().hex[:8]}"
    (old_root / work.lstrip("/")).mkdir(parents=True)
    try:
        yield OldRoot(old_root, work)
    finally:
        shutil.rmtree(old_root / work.lstrip("/"), ignore_errors=True)


def ok(run: Run) -> Run:
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def newest_glibc(path: Path) -> tuple[int, ...] | None:
    return max(glibc_versions(path.read_bytes()), default=None)


# --- the packages: a C program built with zig for glibc 2.17, and shell scripts -------------


@dataclass(frozen=True)
class OldChannel:
    channel: Path
    program_size: int


@pytest.fixture(scope="module")
def old_channel(
    old_root: Path, tmp_path_factory: pytest.TempPathFactory, demo_channel: Path
) -> OldChannel:
    base = tmp_path_factory.mktemp("oldglibc-channel")
    (base / "hello.c").write_text(HELLO_C)
    program = base / "lsold-hello"
    compile_command = [sys.executable, "-m", "ziglang", "cc", "-target", "x86_64-linux-gnu.2.17"]
    compile_command += ["-O2", f'-DINSTALL_PREFIX="{BUILD_PREFIX}"', "-o", str(program)]
    subprocess.run([*compile_command, str(base / "hello.c")], check=True, cwd=base)
    assert newest_glibc(program) is not None and newest_glibc(program) <= (2, 17)
    channel = base / "channel"
    shutil.copytree(demo_channel, channel)
    for version, extra in (("1.0", {}), ("2.0", {"bin/lsold-tool": "#!/bin/sh\necho tool 2\n"})):
        write_conda_package(
            channel,
            "lsold-hello",
            version,
            subdir="linux-64",
            files={"bin/lsold-hello": program.read_bytes(), **extra},
            binary_placeholders={"bin/lsold-hello": BUILD_PREFIX},
            depends=["lsdemo-config"],
        )
    index_channel(channel)
    return OldChannel(channel, program.stat().st_size)


def build(channel: Path, base: Path, version: str, *args: str | Path, virtual: bool = True) -> Run:
    """``lockship build`` the default way: no --stub, the stub cache of the default cache."""
    workspace = base / f"ws-{version}-{uuid.uuid4().hex[:6]}"
    workspace.mkdir(parents=True)
    with ChannelServer(channel) as server:
        specs = ["lsdemo-config", f"lsold-hello {version}.*"]
        records = channel_records(channel, server.url, "linux-64", specs)
        write_pixi_lock(workspace / "pixi.lock", {"linux-64": records}, channel_url=server.url)
        manifest = f'[workspace]\nname = "lsold"\nversion = "{version}"\n'
        (workspace / "pixi.toml").write_text(manifest)
        return run_lockship("build", workspace, "-o", workspace / "out", *args)


@pytest.fixture(scope="module")
def default_installers(
    old_channel: OldChannel, frozen_stub: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Path]:
    """Versions 1.0 and 2.0, built the default way (the stub ``frozen_stub`` found)."""
    base = tmp_path_factory.mktemp("oldglibc-installers")
    found = {}
    for version in ("1.0", "2.0"):
        result = build(old_channel.channel, base, version)
        assert result.returncode == 0, result.stderr
        found[version] = Path(result.stdout.strip().splitlines()[-1])
    return found


# --- installing on glibc 2.28 ------------------------------------------------------------------


def test_default_installer_installs_and_runs_on_glibc_2_28(
    old: OldRoot, old_channel: OldChannel, default_installers: dict[str, Path]
) -> None:
    assert old.run("getconf", "GNU_LIBC_VERSION").stdout.strip() == "glibc 2.28"
    assert not old.host("/bin/bash").exists()  # busybox's sh runs everything below
    installer = old.copy_in(default_installers["1.0"])
    header = default_installers["1.0"].read_bytes()[:8192]
    assert b"LOCKSHIP_GLIBC_MIN=2.17" in header
    prefix = f"{old.work}/env"
    run = ok(old.run("/bin/sh", installer, "-b", "-p", prefix))
    assert "Traceback" not in run.stderr
    names = {p.name.rsplit("-", 2)[0] for p in old.host(f"{prefix}/conda-meta").glob("*.json")}
    assert names == set(SPECS)
    binary = old.host(f"{prefix}/bin/lsold-hello").read_bytes()
    assert len(binary) == old_channel.program_size and BUILD_PREFIX.encode() not in binary
    activated = ok(
        old.sh(
            f'. "{prefix}/activate.sh" && lsold-hello && lsdemo-where && '
            'echo "activated=$LSDEMO_ACTIVATED"'
        )
    )
    assert activated.stdout.splitlines() == [
        f"lsold-hello from {prefix}",
        f"prefix={prefix}",
        "activated=yes",
    ]


def test_installs_where_a_certificate_variable_names_nothing(
    old: OldRoot, default_installers: dict[str, Path]
) -> None:
    """A root without CA certificates and an ``$SSL_CERT_FILE`` carried in from elsewhere (as
    a copied profile or ``chroot`` from a host gives): rattler would read only that file."""
    installer = old.copy_in(default_installers["1.0"])
    prefix = f"{old.work}/env"
    ca = "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt"
    run = ok(old.run("/usr/bin/env", ca, "/bin/sh", installer, "-b", "-p", prefix))
    assert "panicked" not in run.stderr
    assert f"Installed lsold 1.0 into {prefix}" in run.stdout


def test_installer_modes_work_on_glibc_2_28(
    old: OldRoot, default_installers: dict[str, Path]
) -> None:
    first, second = old.copy_in(default_installers["1.0"]), old.copy_in(default_installers["2.0"])
    checked = ok(old.run("/bin/sh", first, "--check")).stdout
    assert checked.startswith("OK: lsold-1.0-linux-64.sh is complete")
    info = json.loads(ok(old.run("/bin/sh", first, "--info", "--json")).stdout)
    assert info["version"] == "1.0" and info["platform"] == "linux-64"
    # the installer's glibc floor, stated wherever it describes itself
    assert info["glibc"] == "2.17"
    assert "needs glibc:       >= 2.17" in ok(old.run("/bin/sh", first, "--info")).stdout
    sbom = json.loads(sbom_path(default_installers["1.0"]).read_text())
    properties = sbom["metadata"]["component"]["properties"]
    assert {"name": "lockship:glibc", "value": "2.17"} in properties
    prefix = f"{old.work}/env"
    ok(old.run("/bin/sh", first, "-b", "-p", prefix))
    ok(old.run("/bin/sh", second, "-b", "-u", "-p", prefix))
    assert ok(old.sh(f'. "{prefix}/activate.sh" && lsold-tool')).stdout == "tool 2\n"
    taken = f"{old.work}/taken"
    old.host(taken).mkdir()
    old.host(f"{taken}/keep.txt").write_text("mine")
    refused = old.run("/bin/sh", first, "-b", "-p", taken)
    assert refused.returncode == 1 and len(refused.error_lines) == 1, refused.stderr
    ok(old.run("/bin/sh", first, "-b", "-f", "-p", taken))
    assert old.host(f"{taken}/keep.txt").read_text() == "mine"
    assert ok(old.run(f"{taken}/bin/lsold-hello")).stdout == f"lsold-hello from {taken}\n"


# --- a stub frozen with this machine's Python -----------------------------------------------


@pytest.fixture(scope="module")
def host_stub(old_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``lockship freeze-stub``: the stub frozen with this machine's own Python."""
    out = tmp_path_factory.mktemp("host-stub") / "lockship-stub-linux-64"
    result = run_lockship("freeze-stub", "-o", out, timeout=1800)
    assert result.returncode == 0, result.stderr
    return out


def test_stub_above_the_environments_glibc_is_refused(
    old: OldRoot, old_channel: OldChannel, host_stub: Path, tmp_path: Path
) -> None:
    facts = stub_facts(host_stub)
    assert facts is not None and facts.glibc is not None
    needs = facts.glibc
    if tuple(int(x) for x in needs.split(".")) <= (2, 28):
        pytest.skip(f"this machine's Python needs only glibc {needs}: nothing to refuse")
    refused = build(old_channel.channel, tmp_path, "1.0", "--stub", host_stub)
    assert refused.returncode == 1
    assert len(refused.error_lines) == 1, refused.stderr
    assert refused.error_lines[0].startswith(
        f"ERROR: the linux-64 stub {host_stub} needs glibc >= {needs}, but the environment "
        f"runs on glibc 2.28 (pixi's default); build with the portable stub (leave out "
        f"--stub and --stub-dir, or lockship freeze-stub --portable) or pass "
        f"--allow-newer-glibc (details: "
    ), refused.stderr
    assert not list(tmp_path.rglob("*.sh"))
    allowed = build(
        old_channel.channel, tmp_path, "1.0", "--stub", host_stub, "--allow-newer-glibc"
    )
    assert allowed.returncode == 0, allowed.stderr
    installer = old.copy_in(Path(allowed.stdout.strip().splitlines()[-1]))
    prefix = f"{old.work}/env"
    run = old.run("/bin/sh", installer, "-b", "-p", prefix)
    assert run.returncode == 1, run.stdout + run.stderr
    assert run.stderr == f"ERROR: this installer needs glibc >= {needs}; this machine has 2.28\n"
    assert run.stdout == ""
    assert not old.host(prefix).exists()


# --- a library whose newer glibc versions only weak symbols need ---------------------------

#: a library linked against glibc 2.34 that calls closefrom (2.34) only when it exists, the way
#: Rust's standard library calls statx, getrandom, copy_file_range (py-rattler's aarch64 wheel)
OPTIONAL_C = r"""
#include <stdio.h>
extern void closefrom(int) __attribute__((weak));
void report(void) { printf("closefrom: %s\n", closefrom ? "present" : "absent"); }
"""
#: a program that loads it as Python loads an extension module: with dlopen
LOADER_C = r"""
#include <dlfcn.h>
#include <stdio.h>
int main(int argc, char **argv) {
    void *library = dlopen(argv[1], RTLD_NOW);
    if (!library) { fprintf(stderr, "%s\n", dlerror()); return 3; }
    ((void (*)(void))dlsym(library, "report"))();
    return 0;
}
"""


def zig_cc(target: str, source: Path, output: Path, *args: str) -> Path:
    command = [sys.executable, "-m", "ziglang", "cc", "-target", target, "-O2", "-o", str(output)]
    subprocess.run([*command, *args, str(source)], check=True, cwd=source.parent)
    return output


def test_versions_only_weak_symbols_need_are_optional_to_glibc_2_28(
    old: OldRoot, tmp_path: Path
) -> None:
    """What the portable aarch64 stub's rattler gets (``relax_optional_glibc``), proven with
    glibc 2.28's own loader: refused before, loaded after, the function absent; on this
    machine's newer glibc it is still found."""
    (tmp_path / "optional.c").write_text(OPTIONAL_C)
    (tmp_path / "loader.c").write_text(LOADER_C)
    library = zig_cc(
        "x86_64-linux-gnu.2.34", tmp_path / "optional.c", tmp_path / "liboptional.so", "-shared"
    )
    loader = zig_cc("x86_64-linux-gnu.2.17", tmp_path / "loader.c", tmp_path / "loader", "-ldl")
    assert newest_glibc(library) == (2, 34)
    (tmp_path / "relaxed").mkdir()
    relaxed_bytes, symbols = relax_optional_glibc(library.read_bytes(), (2, 17))
    relaxed = tmp_path / "relaxed" / "liboptional.so"
    relaxed.write_bytes(relaxed_bytes)
    assert symbols == ["closefrom@GLIBC_2.34"]
    assert newest_glibc(relaxed) == (2, 2, 5)

    inside = {name: old.copy_in(path) for name, path in (("loader", loader), ("lib", library))}
    refused = old.run(inside["loader"], inside["lib"])
    assert refused.returncode == 3
    assert "version `GLIBC_2.34' not found" in refused.stderr
    old.host(inside["lib"]).write_bytes(relaxed_bytes)
    loaded = old.run(inside["loader"], inside["lib"])
    assert (loaded.returncode, loaded.stdout, loaded.stderr) == (0, "closefrom: absent\n", "")
    here = subprocess.run([loader, relaxed], capture_output=True, text=True, check=False)
    assert (here.returncode, here.stdout) == (0, "closefrom: present\n"), here.stderr
