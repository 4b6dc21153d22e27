"""Linux reach on this machine: Debian root filesystems that freeze the installer stub for arm64
and for old glibc, and an aarch64 sysroot to run arm64 programs from the host.

Usage: python scripts/rootfs.py [--cache DIR] COMMAND

Commands (each idempotent: finished steps are skipped, stale stubs are frozen again):

  check     one line: "ready", or why this machine cannot (exit 1); changes nothing but may
            mount binfmt_misc (the test of whether it is mountable)
  host      install debootstrap, qemu-user-static, binfmt-support and the aarch64 cross gcc with
            apt-get if missing; mount binfmt_misc and enable qemu-aarch64
  arm64     bookworm arm64 rootfs (debootstrap --foreign, second stage under qemu via binfmt),
            a venv with lockship + PyInstaller, and the linux-aarch64 stub frozen there
  bullseye  bullseye amd64 rootfs (glibc 2.31), CPython 3.11 built there from Debian bookworm's
            source package (with its security patches), and the linux-64 stub frozen there
  sysroot   the aarch64 sysroot for QEMU_LD_PREFIX: libc6, zlib1g and libgcc-s1 from the arm64
            rootfs (needs `arm64` first)
  all       host, arm64, sysroot, bullseye
  status    what is there and whether the stubs match the current stub sources (JSON)
  clean [NAME ...]   unmount and delete rootfs folders (all of them without NAME)

The cache is --cache, else $LOCKSHIP_ROOTFS_CACHE, else ~/.cache/lockship/rootfs:

  bookworm-arm64/  bullseye-amd64/  root filesystems
  sysroot-aarch64/                  QEMU_LD_PREFIX for arm64 programs run from the host
  stubs/                            a --stub-dir: lockship-stub-linux-aarch64 (bookworm, glibc
                                    2.36 at most) and lockship-stub-linux-64 (bullseye, 2.31)
  logs/                             one log per step; a failing step prints its tail

Needs root. Mounts (/proc and a bind of /dev in a rootfs) live only while a command runs in the
chroot and are always unmounted; nothing under a rootfs is deleted while anything is mounted
there. ``lockship build --stub-dir CACHE/stubs -p linux-64 -p linux-aarch64`` then uses both stubs.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# reach.py, beside this file, holds what the two reach preparations share
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import reach
from reach import REPO, Failed, current_stub_version, locked

CACHE_ENV = "LOCKSHIP_ROOTFS_CACHE"
HOST_PACKAGES = (
    "debootstrap",
    "qemu-user-static",
    "binfmt-support",
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
)
BINFMT = Path("/proc/sys/fs/binfmt_misc")
#: where a rootfs records its finished steps
STAMPS = Path("var/lib/lockship")
#: inside every rootfs
SRC = "/opt/lockship-src"
VENV = "/opt/lockship-venv"
OUT = "/opt/lockship-out"
#: repository files the freeze needs (pip install builds the project from them)
REPO_FILES = ("pyproject.toml", "README.md", "LICENSE", "builder", "stub", "scripts/freeze_stub.py")
#: the packages whose files make the aarch64 sysroot (what a frozen stub and a C program load)
SYSROOT_PACKAGES = ("libc6", "zlib1g", "libgcc-s1")
PYTHON_SOURCE = "python3.11"
PYTHON_PREFIX = "/opt/python3.11"


@dataclass(frozen=True)
class Rootfs:
    name: str
    suite: str
    arch: str  # Debian's name
    platform: str  # conda's name, of the stub frozen there
    packages: tuple[str, ...]
    #: build CPython from source (the suite's own python is older than lockship needs)
    build_python: bool = False
    #: the host's cross compiler for the stub's unpacker (compiling zstd under QEMU takes
    #: minutes); None: the rootfs compiles it with its own cc
    cross_cc: str | None = None
    #: the stub is the portable one, frozen from the host (``lockship freeze-stub --portable``,
    #: under qemu-user); the rootfs only runs installers, so it needs no venv
    portable: bool = False

    @property
    def foreign(self) -> bool:
        return self.arch != host_debian_arch()

    def python(self) -> str:
        return f"{PYTHON_PREFIX}/bin/python3.11" if self.build_python else "/usr/bin/python3"


ARM64 = Rootfs(
    name="bookworm-arm64",
    suite="bookworm",
    arch="arm64",
    platform="linux-aarch64",
    # PyInstaller needs the shared libpython and binutils (objcopy, objdump, strip)
    packages=("python3-venv", "libpython3.11", "binutils", "ca-certificates"),
    cross_cc="aarch64-linux-gnu-gcc",
    portable=True,
)
BULLSEYE = Rootfs(
    name="bullseye-amd64",
    suite="bullseye",
    arch="amd64",
    platform="linux-64",
    packages=(
        "build-essential",
        "ca-certificates",
        "libssl-dev",
        "libffi-dev",
        "zlib1g-dev",
        "libbz2-dev",
        "liblzma-dev",
        "xz-utils",
    ),
    build_python=True,
)
ROOTFS = {r.name: r for r in (ARM64, BULLSEYE)}
SYSROOT = "sysroot-aarch64"


# --- paths and output --------------------------------------------------------------------


def default_cache() -> Path:
    return reach.default_cache(CACHE_ENV, "rootfs")


class Cache(reach.CacheBase):
    tag = "rootfs"

    def rootfs(self, spec: Rootfs) -> Path:
        return self.root / spec.name

    @property
    def stubs(self) -> Path:
        return self.root / "stubs"

    @property
    def sysroot(self) -> Path:
        return self.root / SYSROOT

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    def stub(self, platform_name: str) -> Path:
        return self.stubs / f"lockship-stub-{platform_name}"


def say(line: str) -> None:
    reach.say(Cache.tag, line)


def run(
    argv: Sequence[str | Path],
    *,
    log: Path | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> str:
    """Run a command; its output goes to ``log`` (appended) or is returned. Raises Failed."""
    command = [str(a) for a in argv]
    if log is None:
        process = subprocess.run(
            command, capture_output=True, text=True, env=env, cwd=cwd, check=False
        )
        if process.returncode != 0:
            tail = (process.stderr or process.stdout).strip().splitlines()[-1:] or ["?"]
            raise Failed(f"{' '.join(command[:3])} ... exited {process.returncode}: {tail[0]}")
        return process.stdout
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as out:
        out.write(f"\n$ {' '.join(command)}\n")
        out.flush()
        logged = subprocess.run(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd, check=False
        )
    if logged.returncode != 0:
        lines = log.read_text(errors="replace").splitlines()[-25:]
        for line in lines:
            print(f"    {line}", file=sys.stderr)
        raise Failed(f"{' '.join(command[:4])} ... exited {logged.returncode} (log: {log})")
    return ""


# --- the host ----------------------------------------------------------------------------


def host_debian_arch() -> str:
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())


def configured_mirror() -> str:
    """The Debian mirror apt uses here, for debootstrap (the portable Python's sources come
    from the same one): :func:`lockship.builder.stubs.portable.debian_mirror`."""
    builder = _builder_portable()
    try:
        return str(builder.debian_mirror())
    except builder.StubError as e:
        raise Failed(str(e)) from e


def _builder_portable() -> Any:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from lockship.builder.stubs import portable

    return portable


def binfmt_entry() -> dict[str, str] | None:
    """The qemu-aarch64 binfmt_misc entry (enabled, interpreter, flags), if registered."""
    try:
        text = (BINFMT / "qemu-aarch64").read_text()
    except OSError:
        return None
    entry = {"enabled": "enabled" if text.startswith("enabled") else "disabled"}
    for line in text.splitlines()[1:]:
        key, _, value = line.partition(" ")
        entry[key.rstrip(":")] = value.strip()
    return entry


def mount_binfmt_misc() -> str | None:
    """Mount binfmt_misc if needed; None when mounted, else why it cannot be."""
    if (BINFMT / "status").exists():
        return None
    if not BINFMT.is_dir():
        return f"{BINFMT} does not exist (kernel without binfmt_misc)"
    process = subprocess.run(
        ["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)],
        capture_output=True,
        text=True,
        check=False,
    )
    if process.returncode != 0 or not (BINFMT / "status").exists():
        return f"binfmt_misc cannot be mounted ({process.stderr.strip() or 'no status file'})"
    return None


def machine_reason() -> str | None:
    """Why this machine cannot run the Linux-reach setup, or None when it can."""
    if sys.platform != "linux":
        return f"not Linux ({sys.platform})"
    if os.geteuid() != 0:
        return "not root (debootstrap, chroot and binfmt_misc need root)"
    if platform.machine() != "x86_64":
        return f"this machine is {platform.machine()}, the setup emulates arm64 on x86_64"
    reason = mount_binfmt_misc()
    if reason:
        return reason
    if not shutil.which("apt-get") and not all(
        shutil.which(t) for t in ("debootstrap", "qemu-aarch64-static")
    ):
        return "no apt-get to install debootstrap and qemu-user-static"
    return None


def dpkg_installed(package: str) -> bool:
    process = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False
    )
    return process.returncode == 0 and process.stdout.endswith(" installed")


def prepare_host(cache: Cache) -> None:
    reason = machine_reason()
    if reason:
        raise Failed(reason)
    log = cache.logs / "host.log"
    missing = [p for p in HOST_PACKAGES if not dpkg_installed(p)]
    if missing:
        with cache.step(f"host: apt-get install {' '.join(missing)}"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            run(["apt-get", "update", "-q"], log=log, env=env)
            install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
            run([*install, *missing], log=log, env=env)
    entry = binfmt_entry()
    if entry is None or entry["enabled"] != "enabled":
        run(["update-binfmts", "--enable", "qemu-aarch64"], log=log)
        entry = binfmt_entry()
    if entry is None or entry["enabled"] != "enabled":
        raise Failed("qemu-aarch64 is not registered with binfmt_misc after update-binfmts")
    say(
        f"host: qemu-aarch64 via binfmt_misc ({entry.get('interpreter')}, "
        f"flags {entry.get('flags', '')}); mirror {configured_mirror()}"
    )


# --- mounts ------------------------------------------------------------------------------


def mounts_under(root: Path) -> list[Path]:
    """Mount points at or below ``root``, deepest last (from /proc/self/mountinfo)."""
    root = root.resolve()
    found = []
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), line.split()[4])
        path = Path(point)
        if path == root or root in path.parents:
            found.append(path)
    return found


def unmount_all(root: Path) -> None:
    """Unmount everything below ``root``, deepest first; raise Failed if anything stays."""
    for point in sorted(mounts_under(root), key=lambda p: len(p.parts), reverse=True):
        if subprocess.run(["umount", str(point)], capture_output=True, check=False).returncode:
            subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)
    left = mounts_under(root)
    if left:
        raise Failed(f"still mounted under {root}: {', '.join(map(str, left))}")


@contextlib.contextmanager
def chroot_mounts(root: Path) -> Iterator[None]:
    """/proc and a bind of the host's /dev inside ``root`` while the block runs."""
    unmount_all(root)
    try:
        run(["mount", "-t", "proc", "proc", root / "proc"])
        run(["mount", "--bind", "/dev", root / "dev"])
        yield
    finally:
        unmount_all(root)


def remove_tree(path: Path) -> None:
    """Delete a rootfs (or any folder in the cache) only once nothing is mounted below it."""
    if not path.exists() and not path.is_symlink():
        return
    unmount_all(path)
    if mounts_under(path):  # unmount_all raises first; never rmtree across a live /dev
        raise Failed(f"refusing to delete {path}: something is mounted below it")
    shutil.rmtree(path)


CHROOT_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TMPDIR": "/tmp",
    "PIP_CERT": "/etc/ssl/certs/ca-certificates.crt",
    "SSL_CERT_FILE": "/etc/ssl/certs/ca-certificates.crt",
    "PIP_DISABLE_PIP_VERSION_CHECK": "1",
    "PIP_DEFAULT_TIMEOUT": "180",
    "PIP_PROGRESS_BAR": "off",
}


def chroot_command(
    root: Path, argv: Sequence[str], env: Mapping[str, str] | None = None
) -> list[str]:
    """``chroot ROOT env -i ...`` with a clean environment (nothing from the host leaks in)."""
    variables = [f"{k}={v}" for k, v in {**CHROOT_ENV, **(env or {})}.items()]
    return ["chroot", str(root), "/usr/bin/env", "-i", *variables, *argv]


def in_chroot(
    root: Path, argv: Sequence[str], *, log: Path, env: Mapping[str, str] | None = None
) -> None:
    with chroot_mounts(root):
        run(chroot_command(root, argv, env), log=log)


# --- a rootfs ------------------------------------------------------------------------------


def stamp(root: Path, name: str) -> Path:
    return root / STAMPS / name


def has_stamp(root: Path, name: str, content: str = "") -> bool:
    try:
        return stamp(root, name).read_text() == content
    except OSError:
        return False


def set_stamp(root: Path, name: str, content: str = "") -> None:
    path = stamp(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)


def ensure_interpreter(root: Path, spec: Rootfs) -> None:
    """Without binfmt's F (fix-binary) flag the kernel looks for qemu inside the chroot."""
    if not spec.foreign:
        return
    entry = binfmt_entry()
    if entry is None or entry["enabled"] != "enabled":
        raise Failed("qemu-aarch64 is not enabled in binfmt_misc (run: rootfs.py host)")
    if "F" in entry.get("flags", ""):
        return
    interpreter = Path(entry["interpreter"])
    target = root / interpreter.relative_to("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(interpreter.resolve(), target)


def debootstrap(cache: Cache, spec: Rootfs) -> None:
    root = cache.rootfs(spec)
    if has_stamp(root, "debootstrap", spec.suite):
        return
    log = cache.logs / f"{spec.name}-debootstrap.log"
    log.unlink(missing_ok=True)
    with cache.step(f"{spec.name}: debootstrap"):
        remove_tree(root)  # a partial one from an interrupted run
        root.mkdir(parents=True)
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--arch={spec.arch}",
            f"--include={','.join(spec.packages)}",
        ]
        try:
            if spec.foreign:
                run([*command, "--foreign", spec.suite, root, configured_mirror()], log=log)
                ensure_interpreter(root, spec)
                run(["chroot", root, "/debootstrap/debootstrap", "--second-stage"], log=log)
            else:
                run([*command, spec.suite, root, configured_mirror()], log=log)
        finally:
            unmount_all(root)  # debootstrap mounts /proc and /sys itself
        set_stamp(root, "debootstrap", spec.suite)


def install_certificates(cache: Cache, spec: Rootfs) -> None:
    """The host's extra CA certificates (this network re-signs TLS) and resolver, every time."""
    root = cache.rootfs(spec)
    extra = sorted(Path("/usr/local/share/ca-certificates").glob("**/*.crt"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in extra)).hexdigest()
    with contextlib.suppress(OSError):
        shutil.copyfile("/etc/resolv.conf", root / "etc/resolv.conf")
    if has_stamp(root, "certificates", digest):
        return
    target = root / "usr/local/share/ca-certificates"
    target.mkdir(parents=True, exist_ok=True)
    for path in extra:
        shutil.copyfile(path, target / path.name)
    in_chroot(root, ["update-ca-certificates"], log=cache.logs / f"{spec.name}-certs.log")
    set_stamp(root, "certificates", digest)


def python_source(cache: Cache) -> tuple[Path, Path]:
    """Debian bookworm's python3.11 source package (orig tarball, debian tarball): the one the
    portable Python is built from, fetched the same way into the same folder."""
    portable = _builder_portable()
    from lockship.builder.paths import default_cache_dir

    try:
        found: tuple[Path, Path] = portable.debian_sources(default_cache_dir())[PYTHON_SOURCE]
    except portable.StubError as e:
        raise Failed(str(e)) from e
    return found


#: Applied in the chroot: Debian's security and bug-fix patches (its series from the first CVE
#: patch on; the earlier ones adapt the layout to Debian's packaging), then pyexpat gets
#: Py_BUILD_CORE_MODULE, which Debian's own build sets and one of those patches needs.
BUILD_PYTHON = f"""\
set -e
cd /usr/src/python
started=
for p in $(grep -v '^#' debian/patches/series); do
  case $p in CVE*) started=1 ;; esac
  [ -n "$started" ] || continue
  if patch -p1 -N --batch -s --dry-run < "debian/patches/$p" > /dev/null 2>&1; then
    patch -p1 -N --batch -s < "debian/patches/$p"
  else
    echo "skipped patch $p (does not apply)"
  fi
done
sed -i "s/Extension('pyexpat', sources=/Extension('pyexpat', \
define_macros=[('Py_BUILD_CORE_MODULE', '1')], sources=/" setup.py
./configure --prefix={PYTHON_PREFIX} --enable-shared --with-ensurepip=install \
  --disable-test-modules LDFLAGS=-Wl,-rpath,{PYTHON_PREFIX}/lib
make -j"$(nproc)"
make install
{PYTHON_PREFIX}/bin/python3.11 -c "import ssl, zlib, bz2, lzma, ctypes, pyexpat, _hashlib"
"""


def build_python(cache: Cache, spec: Rootfs) -> None:
    root = cache.rootfs(spec)
    if not spec.build_python or stamp(root, "python").is_file():
        return
    with cache.step(f"{spec.name}: build CPython 3.11 from Debian's source"):
        orig, debian = python_source(cache)
        source = root / "usr/src/python"
        remove_tree(source)
        source.mkdir(parents=True)
        run(["tar", "-xf", orig, "-C", source, "--strip-components=1"])
        run(["tar", "-xf", debian, "-C", source])
        log = cache.logs / f"{spec.name}-python.log"
        log.unlink(missing_ok=True)
        in_chroot(root, ["/bin/sh", "-c", BUILD_PYTHON], log=log)
        remove_tree(source)
        set_stamp(root, "python", orig.name)


def link_python(cache: Cache, spec: Rootfs) -> None:
    """``python3`` on PATH in the rootfs, as on a server with python3 installed (the tests'
    python stand-in package runs the machine's python3)."""
    link = cache.rootfs(spec) / "usr/local/bin/python3"
    if spec.build_python and not os.path.lexists(link):
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(spec.python())


def copy_sources(root: Path) -> str:
    """Copy the files a freeze needs to ROOT/opt/lockship-src; return pyproject_digest()."""
    target = root / SRC.lstrip("/")
    remove_tree(target)
    reach.copy_repo_files(REPO_FILES, target)
    return pyproject_digest()


def rootfs_ready(cache: Cache, spec: Rootfs) -> bool:
    """Whether the rootfs has everything its tests need (a portable stub's needs no venv)."""
    root = cache.rootfs(spec)
    if spec.portable:
        return has_stamp(root, "debootstrap", spec.suite)
    return has_stamp(root, "venv", pyproject_digest())


def install_venv(cache: Cache, spec: Rootfs) -> bool:
    """lockship and its dependencies (PyInstaller included) in a venv; True if (re)installed."""
    root = cache.rootfs(spec)
    if spec.portable:
        return False
    requirements = copy_sources(root)
    if has_stamp(root, "venv", requirements):
        return False
    log = cache.logs / f"{spec.name}-venv.log"
    log.unlink(missing_ok=True)
    with cache.step(f"{spec.name}: venv with lockship and PyInstaller from PyPI"):
        remove_tree(root / VENV.lstrip("/"))
        in_chroot(root, [spec.python(), "-m", "venv", VENV], log=log)
        # Debian's CPython is 3.11.2; lockship asks for 3.11.4 for tarfile's data filter, which
        # only the builder's sdist step uses, never a freeze
        pip = [f"{VENV}/bin/pip", "install", "-q", "--ignore-requires-python"]
        in_chroot(root, [*pip, SRC], log=log)
    set_stamp(root, "venv", requirements)
    return True


def stub_state(path: Path, expected: str | None = None) -> str | None:
    """Why the stub at ``path`` cannot be used as it is (None: current and intact)."""
    sidecar = path.with_name(path.name + ".json")
    try:
        facts = json.loads(sidecar.read_text())
        data = path.read_bytes()
    except (OSError, ValueError):
        return f"{path} or its sidecar is missing"
    if facts.get("size") != len(data) or facts.get("sha256") != hashlib.sha256(data).hexdigest():
        return f"{sidecar} does not describe {path}"
    expected = expected or current_stub_version()
    if facts.get("stub") != expected:
        return f"{path} was frozen from other stub sources ({facts.get('stub')}, now {expected})"
    return None


def freeze(cache: Cache, spec: Rootfs, *, force: bool) -> None:
    root = cache.rootfs(spec)
    target = cache.stub(spec.platform)
    if not force and stub_state(target) is None:
        say(f"{spec.name}: {target.name} is current")
        return
    log = cache.logs / f"{spec.name}-freeze.log"
    log.unlink(missing_ok=True)
    if spec.portable:
        freeze_portable(cache, spec, log)
        return
    with cache.step(f"{spec.name}: freeze the {spec.platform} stub"):
        out = root / OUT.lstrip("/")
        remove_tree(out)
        out.mkdir(parents=True)
        command = [f"{VENV}/bin/python", f"{SRC}/scripts/freeze_stub.py", "-o", f"{OUT}/"]
        if spec.cross_cc:
            reach.cross_compile_unpacker(spec.cross_cc, out / "lockship-unpack")
            command += ["--unpacker", f"{OUT}/lockship-unpack"]
        in_chroot(root, command, log=log)
        built = out / target.name
        facts = json.loads((out / (target.name + ".json")).read_text())
        if facts.get("platform") != spec.platform:
            raise Failed(f"the stub frozen in {spec.name} is for {facts.get('platform')}")
        cache.stubs.mkdir(parents=True, exist_ok=True)
        # sidecar first, then the stub: a stub in place always has its own sidecar
        for name in (target.name + ".json", target.name):
            partial = cache.stubs / f".{name}.part"
            shutil.copy2(out / name, partial)
            os.replace(partial, cache.stubs / name)
        remove_tree(out)
    say(
        f"{spec.name}: {target} ({built.stat().st_size if built.exists() else facts['size']} "
        f"bytes, python {facts['python']}, needs glibc >= {facts['glibc']})"
    )


def freeze_portable(cache: Cache, spec: Rootfs, log: Path) -> None:
    """The portable stub for ``spec.platform``, frozen here under qemu-user with Debian's cross
    C library (``lockship freeze-stub --portable -p PLATFORM``), into ``stubs/``."""
    target = cache.stub(spec.platform)
    with cache.step(f"{spec.name}: freeze the portable {spec.platform} stub"):
        cache.stubs.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "lockship.builder.cli", "freeze-stub", "--portable"]
        run([*command, "-p", spec.platform, "-o", target], log=log, cwd=REPO)
    facts = json.loads(target.with_name(target.name + ".json").read_text())
    say(f"{spec.name}: {target} ({facts['size']} bytes, needs glibc >= {facts['glibc']})")


def prepare_rootfs(cache: Cache, spec: Rootfs) -> None:
    root = cache.rootfs(spec)
    debootstrap(cache, spec)
    ensure_interpreter(root, spec)
    install_certificates(cache, spec)
    build_python(cache, spec)
    link_python(cache, spec)
    reinstalled = install_venv(cache, spec)
    freeze(cache, spec, force=reinstalled)


# --- the aarch64 sysroot -------------------------------------------------------------------


def sysroot_lists(root: Path) -> list[Path]:
    return [root / f"var/lib/dpkg/info/{p}:arm64.list" for p in SYSROOT_PACKAGES]


def sysroot_digest(root: Path) -> str:
    """What the sysroot was copied from: the dpkg file lists of its packages in ``root``."""
    lists = sysroot_lists(root)
    return hashlib.sha256(b"".join(p.read_bytes() for p in lists if p.exists())).hexdigest()


def prepare_sysroot(cache: Cache) -> None:
    """libc6, zlib1g and libgcc-s1 copied out of the arm64 rootfs (their dpkg file lists)."""
    root = cache.rootfs(ARM64)
    if not has_stamp(root, "debootstrap", ARM64.suite):
        raise Failed(f"no {ARM64.name} rootfs to take the sysroot from (run: rootfs.py arm64)")
    lists = sysroot_lists(root)
    digest = sysroot_digest(root)
    target = cache.sysroot
    if has_stamp(target, "sysroot", digest):
        return
    with cache.step("sysroot-aarch64: copy libc6, zlib1g, libgcc-s1"):
        remove_tree(target)
        target.mkdir(parents=True)
        real_root = Path(os.path.realpath(root))
        for listing in lists:
            for line in listing.read_text().splitlines():
                source = root / line.lstrip("/")
                if not os.path.lexists(source):
                    continue
                # through the merged-/usr links (lib -> usr/lib) to where the file really is
                if source.is_dir() and not source.is_symlink():
                    (target / Path(os.path.realpath(source)).relative_to(real_root)).mkdir(
                        parents=True, exist_ok=True
                    )
                    continue
                parent = Path(os.path.realpath(source.parent)).relative_to(real_root)
                destination = target / parent / source.name
                destination.parent.mkdir(parents=True, exist_ok=True)
                if not os.path.lexists(destination):
                    shutil.copy2(source, destination, follow_symlinks=False)
        for top in root.iterdir():  # the merged-/usr links themselves
            if top.is_symlink() and not os.path.lexists(target / top.name):
                (target / top.name).symlink_to(top.readlink())
        if not (target / "lib/ld-linux-aarch64.so.1").exists():
            raise Failed(f"{target} has no lib/ld-linux-aarch64.so.1")
        set_stamp(target, "sysroot", digest)
    size = sum(p.stat().st_size for p in target.rglob("*") if p.is_file() and not p.is_symlink())
    say(f"sysroot-aarch64: {target} ({size / 1e6:.0f} MB); QEMU_LD_PREFIX={target}")


# --- status and commands --------------------------------------------------------------------


def status(cache: Cache) -> dict[str, Any]:
    version = current_stub_version()
    report: dict[str, Any] = {"cache": str(cache.root), "stub_sources": version}
    for spec in ROOTFS.values():
        root = cache.rootfs(spec)
        stub_path = cache.stub(spec.platform)
        report[spec.name] = {
            "rootfs": str(root),
            "ready": rootfs_ready(cache, spec),
            "stub": str(stub_path),
            "stub_problem": stub_state(stub_path, version),
        }
    report[SYSROOT] = {"path": str(cache.sysroot), "ready": (cache.sysroot / STAMPS).is_dir()}
    entry = binfmt_entry()
    report["binfmt_qemu_aarch64"] = entry
    return report


def pyproject_digest() -> str:
    """What the venv installs from pyproject.toml: the dependencies and the build requirements
    (other edits there, a new pytest marker say, need no reinstall under emulation)."""
    import tomllib  # here: `check` runs under whatever python3 the machine has

    data = tomllib.loads((REPO / "pyproject.toml").read_text())
    wanted = {
        "dependencies": data.get("project", {}).get("dependencies", []),
        "requires-python": data.get("project", {}).get("requires-python"),
        "build-system": data.get("build-system", {}),
    }
    return hashlib.sha256(json.dumps(wanted, sort_keys=True).encode()).hexdigest()


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    parser.add_argument("--cache", type=Path, default=None, help=f"default: ${CACHE_ENV}")
    parser.add_argument(
        "command",
        choices=["check", "host", "arm64", "bullseye", "sysroot", "all", "status", "clean"],
    )
    parser.add_argument("names", nargs="*", help="with clean: rootfs folders to delete")
    args = parser.parse_args(argv)
    cache = Cache((args.cache or default_cache()).absolute())

    if args.command == "check":
        reason = machine_reason()
        print(reason or "ready")
        return 1 if reason else 0
    if args.command == "status":
        print(json.dumps(status(cache), indent=2))
        return 0
    if os.geteuid() != 0:
        print("ERROR: rootfs.py needs root (debootstrap, chroot, mount)", file=sys.stderr)
        return 1
    started = time.monotonic()
    try:
        with locked(cache.root):
            if args.command == "clean":
                names = args.names or [*ROOTFS, SYSROOT]
                for name in names:
                    say(f"deleting {cache.root / name}")
                    remove_tree(cache.root / name)
                return 0
            if args.command in ("host", "all"):
                prepare_host(cache)
            if args.command in ("arm64", "all"):
                prepare_rootfs(cache, ARM64)
            if args.command in ("sysroot", "all"):
                prepare_sysroot(cache)
            if args.command in ("bullseye", "all"):
                prepare_rootfs(cache, BULLSEYE)
    except (Failed, OSError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    for what, took in cache.timings:
        say(f"  {took:6.0f} s  {what}")
    say(f"{args.command}: {time.monotonic() - started:.0f} s in all; stubs in {cache.stubs}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
