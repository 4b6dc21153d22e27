"""A portable Python for freezing the Linux stub: CPython 3.11 compiled with zig for glibc 2.17.

A stub frozen with the build machine's own Python needs that machine's glibc (2.35 on Debian
12), so its installers refuse older servers. The portable route makes every ELF file of the stub
need at most glibc 2.17 (RHEL 7 and everything newer), from any Linux build machine:

- ``zig cc -target <arch>-linux-gnu.2.17`` (the ``ziglang`` wheel, installed into the cache with
  pip unless this Python has it) compiles zlib, libffi and CPython 3.11 from Debian bookworm's
  source packages (fetched once with ``apt-get source`` through apt's configured mirror, or put
  into ``CACHE/sources/debian`` by hand), Debian's security patches applied. Every extension
  module the stub can import is linked into ``libpython`` through ``Modules/Setup.local``, and
  ``setup.py`` builds nothing, so no header of the build machine is ever used.
- The freeze's dependencies (PyInstaller, py-rattler, tqdm, installer, zstandard, at the versions
  installed here) are manylinux2014 wheels installed with pip ``--platform``: nothing compiled.
- That Python runs :func:`lockship.builder.stubs.freeze.freeze_stub` with an unpacker compiled
  by zig for the same target. ``libgcc_s`` is not bundled (:data:`freeze.SYSTEM_LIBRARIES`).

The Python is built once per target and kept in ``CACHE/portable/<key>`` (the key hashes the
build recipe, the source tarballs, zig's version and the target): a few minutes on two cores.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import inspect
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from lockship.builder.errors import StubError
from lockship.builder.stubs.elf import parse_version, relax_optional_glibc
from lockship.builder.stubs.facts import StubFacts, facts_path, stub_facts
from lockship.builder.stubs.tools import run_tool

#: what everything compiled here needs: glibc 2.17 (CentOS/RHEL 7; conda-forge's floor too)
GLIBC_FLOOR = "2.17"
ZIG_VERSION = "0.17.1"
#: conda platform -> zig target, and the wheel platforms pip may take the freeze's packages
#: for (py-rattler 0.28 publishes its aarch64 wheel for manylinux_2_28 only; the versions
#: above 2.17 it needs are for weak symbols alone, made optional by :func:`_relax_wheels`)
TARGETS = {
    "linux-64": ("x86_64-linux-gnu.2.17", ("manylinux2014_x86_64",)),
    "linux-aarch64": (
        "aarch64-linux-gnu.2.17",
        ("manylinux2014_aarch64", "manylinux_2_28_aarch64"),
    ),
}
#: the glibc each portable stub needs
PORTABLE_GLIBC = {"linux-64": GLIBC_FLOOR, "linux-aarch64": GLIBC_FLOOR}
#: Debian (bookworm) source packages: CPython, and the native libraries the stub imports
#: (zlib for PyInstaller's archive, libffi for ctypes); no OpenSSL, bz2, lzma or sqlite
SOURCE_PACKAGES = ("python3.11", "zlib", "libffi")
DEBIAN_SUITE = "bookworm"
#: the Python's fixed prefix inside the build: paths compiled into libpython do not depend
#: on where the cache lies (the installed tree is moved; Python finds its home from its path)
PREFIX = "/opt/lockship-python"
#: what the freeze installs with pip (at the versions installed here, when they are)
FREEZE_REQUIREMENTS = (
    "pyinstaller",
    "pyinstaller-hooks-contrib",
    "altgraph",
    "packaging",
    "py-rattler",
    "tqdm",
    "installer",
    "zstandard",
)
#: seconds one build step (configure, make) may take
STEP_TIMEOUT = 60 * 60
PROGRESS_LINE = "making the portable {platform} stub (once, a few minutes)"


@dataclass(frozen=True)
class PortablePython:
    """A CPython built for ``platform`` with zig, and the site folder the freeze imports from."""

    platform: str
    root: Path
    site: Path

    @property
    def executable(self) -> Path:
        return self.root / "bin" / "python3.11"

    def environment(self) -> dict[str, str]:
        """The variables that run it: its libpython, the freeze's packages, nothing of ours."""
        keep = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        return {
            **keep,
            "LD_LIBRARY_PATH": str(self.root / "lib"),
            "PYTHONPATH": str(self.site),
            "PYTHONNOUSERSITE": "1",
        }


def portable_supported(platform: str) -> bool:
    """Whether this machine can make a portable stub for ``platform`` (a Linux of that CPU)."""
    from lockship.builder.paths import host_platform

    return sys.platform == "linux" and platform in TARGETS and platform == host_platform()


def freeze_portable_stub(
    output: Path,
    on_line: Callable[[str], None] = lambda _: None,
    *,
    platform: str | None = None,
    cache_dir: Path | None = None,
) -> StubFacts:
    """Freeze the stub for ``platform`` (default: this machine's) with the portable Python, at
    ``output``.

    Another CPU's Python is cross-compiled (with this machine's as its build Python) and the
    freeze runs it through binfmt_misc and qemu-user, with ``$QEMU_LD_PREFIX`` (default:
    Debian's cross C library, ``/usr/<arch>-linux-gnu``) supplying its C library. The Python,
    zig and the sources are kept in ``cache_dir`` (default: lockship's cache)."""
    from lockship.builder.paths import default_cache_dir, host_platform

    platform = platform or host_platform()
    cache_dir = cache_dir or default_cache_dir()
    if platform not in TARGETS or host_platform() not in TARGETS:
        raise StubError(f"no portable stub for {platform} (only for {', '.join(TARGETS)})")
    on_line(PROGRESS_LINE.format(platform=platform))
    build_python = None
    if platform != host_platform():
        build_python = portable_python(host_platform(), cache_dir, on_line)
    python = portable_python(platform, cache_dir, on_line, build_python=build_python)
    unpacker = _unpacker(platform, cache_dir, on_line)
    import lockship.builder
    import lockship.stub

    with tempfile.TemporaryDirectory(prefix="lockship-portable-") as tmp:
        script = Path(tmp) / "freeze_portable.py"
        script.write_text(_FREEZE_SCRIPT)
        env = python.environment()
        if build_python is not None:
            env |= _emulation(platform, Path(tmp) / "bin")
        run_tool(
            [
                str(python.executable),
                "-s",
                str(script),
                str(Path(lockship.builder.__file__).parent),
                str(Path(lockship.stub.__file__).parent),
                str(output),
                str(unpacker),
            ],
            what=f"freezing the {platform} stub with the portable Python",
            timeout=STEP_TIMEOUT,
            cwd=Path(tmp),
            env=env,
        )
    facts = stub_facts(output)
    if facts is None:
        raise StubError(f"the portable freeze left no sidecar {facts_path(output)}")
    on_line(f"Froze the portable stub: {output} ({facts.size / 1e6:.0f} MB, glibc {facts.glibc})")
    return facts


def _emulation(platform: str, tools: Path) -> dict[str, str]:
    """What the freeze of another CPU's stub needs: its C library for qemu-user, and that
    CPU's ``strip`` and ``objcopy`` (PyInstaller strips what it bundles and adds a section to
    its program) first on PATH."""
    arch = TARGETS[platform][0].split("-")[0]
    binfmt = Path("/proc/sys/fs/binfmt_misc") / f"qemu-{arch}"
    try:
        registered = binfmt.read_text().startswith("enabled")
    except OSError:
        registered = False
    if not registered:
        raise StubError(
            f"cannot run {arch} programs here to freeze the {platform} stub: qemu-{arch} is not "
            f"enabled in binfmt_misc (Debian: qemu-user-static and binfmt-support)"
        )
    tools.mkdir(parents=True, exist_ok=True)
    for tool in ("strip", "objcopy"):
        (tools / tool).symlink_to(_cross_binutil(arch, tool))
    libc = os.environ.get("QEMU_LD_PREFIX") or f"/usr/{arch}-linux-gnu"
    if not Path(libc, "lib", "libc.so.6").is_file():
        raise StubError(
            f"no {arch} C library at {libc} for qemu-user (Debian's libc6-{arch}-cross); set "
            f"$QEMU_LD_PREFIX to one"
        )
    return {"QEMU_LD_PREFIX": libc, "PATH": f"{tools}{os.pathsep}{os.environ.get('PATH', '')}"}


def _cross_binutil(arch: str, tool: str) -> str:
    found = shutil.which(f"{arch}-linux-gnu-{tool}")
    if found is None:
        raise StubError(
            f"no {arch}-linux-gnu-{tool} to build the {arch} stub here (Debian's "
            f"binutils-{arch.replace('_', '-')}-linux-gnu)"
        )
    return found


#: run by the portable Python: lockship's two packages from their folders (an editable or a
#: wheel install alike), then the one freeze function
_FREEZE_SCRIPT = """\
import importlib.util, sys, types
from pathlib import Path

builder, stub, output, unpacker = map(Path, sys.argv[1:5])
namespace = types.ModuleType("lockship")
namespace.__path__ = []
sys.modules["lockship"] = namespace
for name, folder in (("stub", stub), ("builder", builder)):
    spec = importlib.util.spec_from_file_location(
        f"lockship.{name}", folder / "__init__.py", submodule_search_locations=[str(folder)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    setattr(namespace, name, module)
from lockship.builder.stubs.freeze import freeze_stub

freeze_stub(output, unpacker=unpacker)
"""


# --- the Python ------------------------------------------------------------------------------


def portable_python(
    platform: str,
    cache_dir: Path,
    on_line: Callable[[str], None] = lambda _: None,
    *,
    build_python: PortablePython | None = None,
) -> PortablePython:
    """The portable Python for ``platform``, built once into the cache, with the freeze's
    packages installed for it (cross-compiled with ``build_python`` for another CPU)."""
    sources = debian_sources(cache_dir, on_line)
    zig = zig_executable(cache_dir, on_line)
    target = TARGETS[platform][0]
    key = _python_key(sources, target)
    folder = cache_dir / "portable" / key
    folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder / ".lock"):  # one build at a time; the others then find it made
        return _prepared(platform, folder, sources, zig, build_python, cache_dir, on_line)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import fcntl  # POSIX only: this module is imported on Windows too, where nothing calls this

    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _prepared(
    platform: str,
    folder: Path,
    sources: dict[str, tuple[Path, Path]],
    zig: Path,
    build_python: PortablePython | None,
    cache_dir: Path,
    on_line: Callable[[str], None],
) -> PortablePython:
    target, wheel_platform = TARGETS[platform]
    root = folder / f"python-{platform}"
    if not (root / "bin" / "python3.11").is_file():
        on_line(f"Compiling CPython 3.11 for glibc {GLIBC_FLOOR} with zig (once)...")
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".build-", dir=folder) as tmp:
            built = _build_python(Path(tmp), sources, zig, target, build_python)
            shutil.rmtree(root, ignore_errors=True)
            os.replace(built, root)
    site = folder / f"site-{platform}-{_site_key(wheel_platform)}"
    if not site.is_dir():
        on_line("Installing PyInstaller and py-rattler's manylinux2014 wheels for it (once)...")
        with tempfile.TemporaryDirectory(prefix=".site-", dir=folder) as tmp:
            _install_wheels(Path(tmp) / "site", wheel_platform)
            for line in _relax_wheels(Path(tmp) / "site"):
                on_line(line)
            on_line("Compiling PyInstaller's bootloader with zig and zlib inside (once)...")
            bootloader = _build_bootloader(Path(tmp), zig, target, cache_dir)
            _replace_bootloader(Path(tmp) / "site", bootloader, platform)
            os.replace(Path(tmp) / "site", site)
    return PortablePython(platform, root, site)


def _python_key(sources: dict[str, tuple[Path, Path]], target: str) -> str:
    """What decides the Python built: the recipe (the functions below, not the rest of this
    file), the source tarballs, zig and the target."""
    recipe: list[Callable[..., object]] = [_build_python, _patch_python, _unpack]
    if target.split("-")[0] != os.uname().machine:
        recipe.append(_cross_configure)
    digest = hashlib.sha256("".join(inspect.getsource(f) for f in recipe).encode())
    digest.update(_UNWANTED.pattern.encode())
    for name in SOURCE_PACKAGES:
        digest.update("".join(p.name for p in sources[name]).encode())
    digest.update(f"{ZIG_VERSION}\n{target}".encode())
    return digest.hexdigest()[:16]


def pinned_requirements() -> list[str]:
    """The freeze's requirements, pinned to the versions installed here where they are."""

    def pinned(name: str) -> str:
        try:
            return f"{name}=={version(name)}"
        except PackageNotFoundError:
            return name

    return [pinned(name) for name in FREEZE_REQUIREMENTS]


def _site_key(wheel_platforms: Sequence[str]) -> str:
    text = "\n".join([*wheel_platforms, ZIG_VERSION, *pinned_requirements()])
    recipe = (_build_bootloader, _replace_bootloader, _relax_wheels, relax_optional_glibc)
    text += "".join(inspect.getsource(f) for f in recipe)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


#: PyInstaller's own Linux bootloaders link the system's libz.so.1, which a minimal system
#: may lack (and which the bootloader would look for before its folder is on any path)
PYINSTALLER_SDIST = "pyinstaller-{version}.tar.gz"


def _build_bootloader(work: Path, zig: Path, target: str, cache_dir: Path) -> Path:
    """PyInstaller's bootloader (``run``) from its sdist, compiled by zig for ``target`` with
    its bundled zlib linked in (waf ``--static-zlib``)."""
    release = version("pyinstaller")
    sdist = cache_dir / "sources" / PYINSTALLER_SDIST.format(version=release)
    if not sdist.is_file():
        sdist.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".sdist-", dir=sdist.parent) as tmp:
            command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps"]
            command += ["--no-binary", ":all:", "--dest", tmp, f"pyinstaller=={release}"]
            run_tool(
                command,
                what="downloading PyInstaller's sources (its sdist) with pip",
                timeout=STEP_TIMEOUT,
                cwd=Path(tmp),
            )
            os.replace(Path(tmp) / sdist.name, sdist)
    source = _unpack(sdist, work / "pyinstaller") / "bootloader"
    compiler = work / "bootloader-cc"
    # zig's clang refuses the glibc suffix of the target when it only preprocesses (-E), as
    # waf does to identify the compiler
    compiler.write_text(
        "#!/bin/sh\n"
        f"target={target}\n"
        f'for a in "$@"; do [ "$a" = -E ] && target={target.split(".")[0]}; done\n'
        f'exec "{zig}" cc -target "$target" -ffile-prefix-map={source}=bootloader "$@"\n'
    )
    compiler.chmod(0o755)
    waf = [sys.executable, "waf", "--static-zlib", "--no-tests", "configure", "build_release"]
    env = {**os.environ, "CC": str(compiler), "ZIG_GLOBAL_CACHE_DIR": str(work / "zig-cache")}
    env["ZIG_LOCAL_CACHE_DIR"] = env["ZIG_GLOBAL_CACHE_DIR"]
    arch = target.split("-")[0]
    if arch != os.uname().machine:  # waf strips the bootloader: with that CPU's strip
        env["STRIP"] = _cross_binutil(arch, "strip")
    run_tool(
        waf, what="compiling PyInstaller's bootloader", timeout=STEP_TIMEOUT, cwd=source, env=env
    )
    return source / "build" / "release" / "run"


def _replace_bootloader(site: Path, bootloader: Path, platform: str) -> None:
    folder = {"linux-64": "Linux-64bit-intel", "linux-aarch64": "Linux-64bit-arm"}[platform]
    target = site / "PyInstaller" / "bootloader" / folder / "run"
    if not target.is_file():
        raise StubError(f"PyInstaller's wheel has no bootloader {folder}/run to replace")
    shutil.copyfile(bootloader, target)


def _relax_wheels(site: Path) -> list[str]:
    """Make optional, in every ELF file of the installed wheels, the glibc versions above the
    floor that only weak symbols need (see :mod:`lockship.builder.stubs.elf`); what was made
    optional, a line per file."""
    floor = parse_version(GLIBC_FLOOR)
    assert floor is not None
    lines = []
    for path in sorted(site.rglob("*.so*")):
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        relaxed, symbols = relax_optional_glibc(data, floor)
        if symbols:
            path.write_bytes(relaxed)
            named = ", ".join(symbols)
            lines.append(f"Made optional in {path.relative_to(site)} (weak symbols): {named}")
    return lines


def _install_wheels(target: Path, wheel_platforms: Sequence[str]) -> None:
    command = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    command += ["--target", str(target), "--only-binary=:all:"]
    command += [f"--platform={p}" for p in wheel_platforms]
    command += ["--python-version", "3.11", "--implementation", "cp", "--abi", "cp311"]
    run_tool(
        [*command, *pinned_requirements()],
        what="installing the freeze's wheels for the portable Python with pip",
        timeout=STEP_TIMEOUT,
        cwd=target.parent,
    )


def _build_python(
    work: Path,
    sources: dict[str, tuple[Path, Path]],
    zig: Path,
    target: str,
    build_python: PortablePython | None,
) -> Path:
    """Build zlib, libffi and CPython in ``work``; the installed Python's folder. With
    ``build_python`` (this machine's portable Python) it is a cross build for ``target``."""
    tools = work / "bin"
    tools.mkdir()
    for name, command in (("cc", f"cc -target {target}"), ("ar", "ar"), ("ranlib", "ranlib")):
        script = tools / name
        script.write_text(f'#!/bin/sh\nexec "{zig}" {command} "$@"\n')
        script.chmod(0o755)
    deps = work / "deps"
    env = {
        **{k: v for k, v in os.environ.items() if k not in ("CFLAGS", "LDFLAGS", "CPPFLAGS")},
        "CC": str(tools / "cc"),
        "AR": str(tools / "ar"),
        "RANLIB": str(tools / "ranlib"),
        # the build machine's libraries stay out: configure must not find them
        "PKG_CONFIG_LIBDIR": str(work / "no-pkgconfig"),
        "ZIG_GLOBAL_CACHE_DIR": str(work / "zig-cache"),
        "ZIG_LOCAL_CACHE_DIR": str(work / "zig-cache"),
    }
    host = target.split(".")[0]
    jobs = f"-j{os.cpu_count() or 1}"
    zlib = _unpack(sources["zlib"][0], work / "zlib")
    # __FILE__ (in CPython's error helpers) names the source as compiled: not this folder
    cflags = f"-O2 -fPIC -ffile-prefix-map={work}=/lockship-build"
    _step(["./configure", "--static", f"--prefix={deps}"], zlib, {**env, "CFLAGS": cflags})
    _step(["make", jobs, "libz.a"], zlib, env)
    _step(["make", "install"], zlib, env)
    ffi = _unpack(sources["libffi"][0], work / "libffi")
    _step(
        [
            "./configure",
            f"--host={host}",
            "--disable-shared",
            "--enable-static",
            "--with-pic",
            "--disable-docs",
            "--disable-multi-os-directory",
            # its static trampolines do not compile with clang 16 and later (libffi 3.4.4)
            "--disable-exec-static-tramp",
            f"--prefix={deps}",
        ],
        ffi,
        {**env, "CFLAGS": cflags},
    )
    _step(["make", jobs], ffi, env)
    _step(["make", "install"], ffi, env)
    source = _unpack(sources["python3.11"][0], work / "python")
    with tarfile.open(sources["python3.11"][1]) as debian:
        debian.extractall(source, filter="data")
    _patch_python(source, deps)
    build = work / "python-build"
    build.mkdir()
    # run by a relative path: configure's path is compiled into getpath (VPATH), and the
    # relative one is the same in every cache folder
    configure = [os.path.relpath(source / "configure", build), f"--prefix={PREFIX}"]
    configure += ["--enable-shared"]
    configure += ["--without-ensurepip", "--disable-test-modules"]
    # no -g, and __FILE__ relative to a fixed name: nothing of this build's folder is compiled in
    configure_env = {**env, "OPT": f"-DNDEBUG -fwrapv -O2 -ffile-prefix-map={work}=/lockship-build"}
    if build_python is not None:
        runner = tools / "build-python"
        libraries = build_python.root / "lib"
        runner.write_text(
            f'#!/bin/sh\nLD_LIBRARY_PATH="{libraries}" exec "{build_python.executable}" "$@"\n'
        )
        runner.chmod(0o755)
        configure += _cross_configure(host, runner)
    _step(configure, build, configure_env)
    shutil.copyfile(source / "Modules" / "Setup.local", build / "Modules" / "Setup.local")
    setup_files = ["Modules/Setup.local", "Modules/Setup.stdlib", "Modules/Setup.bootstrap"]
    makesetup = [
        "/bin/sh",
        str(source / "Modules" / "makesetup"),
        "-c",
        str(source / "Modules" / "config.c.in"),
        "-s",
        "Modules",
        "-m",
        "Makefile.pre",
        *setup_files,
        str(source / "Modules" / "Setup"),
    ]
    _step(makesetup, build, env)
    # libpython3.so (the stable-ABI stub library) links no object file, which zig refuses
    _step(["make", jobs, "PY3LIBRARY="], build, env)
    installed = work / "install"
    _step(["make", "install", f"DESTDIR={installed}", "PY3LIBRARY="], build, env)
    return installed / PREFIX.lstrip("/")


def _cross_configure(host: str, build_python: Path) -> list[str]:
    """configure's arguments for a cross build, with what it cannot run a program to find out
    (the answers for any glibc Linux)."""
    return [
        f"--build={os.uname().machine}-pc-linux-gnu",
        f"--host={host}",
        f"--with-build-python={build_python}",
        "ac_cv_file__dev_ptmx=yes",
        "ac_cv_file__dev_ptc=no",
        "ac_cv_buggy_getaddrinfo=no",
    ]


def _patch_python(source: Path, deps: Path) -> None:
    """Debian's security patches, then what zig's clang needs, then every module static."""
    series = (source / "debian" / "patches" / "series").read_text().split()
    started = False
    for name in series:
        started = started or name.startswith("CVE")
        if not started or name.startswith("#"):
            continue
        patch = source / "debian" / "patches" / name
        check = ["patch", "-p1", "-N", "--batch", "-s", "--dry-run", "-i", str(patch)]
        if subprocess.run(check, cwd=source, capture_output=True, check=False).returncode == 0:
            _step(["patch", "-p1", "-N", "--batch", "-s", "-i", str(patch)], source, None)
    # zig's clang refuses __DATE__/__TIME__ (-Werror=date-time); a fixed date is reproducible
    buildinfo = source / "Modules" / "getbuildinfo.c"
    _replace(buildinfo, "#define DATE __DATE__", '#define DATE "Jan 01 1980"')
    _replace(buildinfo, "#define TIME __TIME__", '#define TIME "00:00:00"')
    # zig's linker takes -soname, not -h
    for old in ("-Wl,-h$(INSTSONAME)", "-Wl,-h$@"):
        _replace(source / "Makefile.pre.in", old, old.replace("-Wl,-h", "-Wl,-soname,"))
    # setup.py would add the build machine's /usr/include: every module comes from Setup.local
    _replace(
        source / "setup.py",
        "    def detect_modules(self):\n",
        "    def detect_modules(self):\n        return\n",
    )
    stdlib = (source / "Modules" / "Setup.stdlib.in").read_text()
    modules = [
        re.sub(r"^@MODULE_[A-Z0-9_]+_TRUE@", "", line)
        for line in stdlib.splitlines()
        if line.startswith("@MODULE_") and not _unwanted(line)
    ]
    ctypes_sources = "_ctypes/_ctypes.c _ctypes/callbacks.c _ctypes/callproc.c"
    ctypes_sources += " _ctypes/stgdict.c _ctypes/cfield.c"
    local = [
        "# lockship: linked into libpython; the rest of Setup.stdlib needs libraries not built",
        "*static*",
        f"zlib zlibmodule.c -I{deps}/include {deps}/lib/libz.a",
        f"_ctypes {ctypes_sources} -DHAVE_FFI_PREP_CIF_VAR -DHAVE_FFI_PREP_CLOSURE_LOC "
        f"-DHAVE_FFI_CLOSURE_ALLOC -I{deps}/include {deps}/lib/libffi.a",
        *modules,
    ]
    (source / "Modules" / "Setup.local").write_text("\n".join(local) + "\n")


#: Setup.stdlib modules left out: tests, examples, and those needing libraries not built here
_UNWANTED = re.compile(
    r"@MODULE_(_?TEST\w*|_XXTESTFUZZ|_CTYPES_TEST|XXLIMITED\w*|_BZ2|_LZMA|ZLIB|_GDBM|_DBM|"
    r"_SSL|_HASHLIB|_SQLITE3|_UUID|_TKINTER|_SCPROXY|_CRYPT|NIS|READLINE|_CURSES\w*)_TRUE@"
)


def _unwanted(line: str) -> bool:
    return bool(_UNWANTED.match(line))


def _replace(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    if old not in text:
        raise StubError(f"cannot adapt {path.name} for zig: it has no {old!r}")
    path.write_text(text.replace(old, new))


def _unpack(archive: Path, target: Path) -> Path:
    """``archive``'s one top folder's content in ``target``."""
    target.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            parts = member.name.split("/", 1)
            if len(parts) < 2 or not parts[1]:
                continue
            member.name = parts[1]
            tar.extract(member, target, filter="data")
    return target


def _step(command: Sequence[str], cwd: Path, env: dict[str, str] | None) -> None:
    run_tool(
        command,
        what=f"building the portable Python ({Path(command[0]).name} in {cwd.name})",
        timeout=STEP_TIMEOUT,
        cwd=cwd,
        env=env,
    )


# --- zig ---------------------------------------------------------------------------------------


def zig_executable(cache_dir: Path, on_line: Callable[[str], None] = lambda _: None) -> Path:
    """zig from the ``ziglang`` wheel: this Python's, if it is :data:`ZIG_VERSION`, else one
    installed with pip into ``CACHE/tools``."""
    spec = importlib.util.find_spec("ziglang")
    if spec is not None and spec.origin is not None:
        try:
            if version("ziglang") == ZIG_VERSION:
                return Path(spec.origin).parent / "zig"
        except PackageNotFoundError:
            pass
    folder = cache_dir / "tools" / f"ziglang-{ZIG_VERSION}"
    zig = folder / "ziglang" / "zig"
    if zig.is_file():
        return zig
    on_line(f"Installing zig {ZIG_VERSION} (the ziglang wheel) with pip (once)...")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".ziglang-", dir=folder.parent) as tmp:
        command = [sys.executable, "-m", "pip", "install", "--quiet"]
        command += ["--disable-pip-version-check", "--target", tmp, f"ziglang=={ZIG_VERSION}"]
        run_tool(command, what="installing zig with pip", timeout=STEP_TIMEOUT, cwd=Path(tmp))
        os.replace(tmp, folder)
        Path(tmp).mkdir()  # for TemporaryDirectory's cleanup
    return zig


# --- the unpacker ------------------------------------------------------------------------------


def _unpacker(platform: str, cache_dir: Path, on_line: Callable[[str], None]) -> Path:
    """The stub's unpacker compiled by zig for the portable target (cached)."""
    from lockship.builder.stubs.pack import UNPACKER_FILES, compile_unpacker, zstd_source

    target = TARGETS[platform][0]
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in UNPACKER_FILES))
    digest.update(f"{version('zstandard')}\n{ZIG_VERSION}\n{target}".encode())
    cached = cache_dir / "unpackers" / digest.hexdigest()[:16] / "lockship-unpack"
    if cached.is_file():
        return cached
    zig = zig_executable(cache_dir, on_line)
    cached.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".unpacker-", dir=cached.parent) as tmp:
        compiler = Path(tmp) / "zig-cc"
        compiler.write_text(f'#!/bin/sh\nexec "{zig}" cc -target {target} "$@"\n')
        compiler.chmod(0o755)
        built = Path(tmp) / cached.name
        compile_unpacker(zstd_source(Path(tmp) / "zstd"), built, str(compiler))
        os.replace(built, cached)
    return cached


# --- Debian's sources ----------------------------------------------------------------------------


def debian_sources(
    cache_dir: Path, on_line: Callable[[str], None] = lambda _: None
) -> dict[str, tuple[Path, Path]]:
    """Each of :data:`SOURCE_PACKAGES` as (orig tarball, debian tarball) in
    ``CACHE/sources/debian``, fetched once with ``apt-get source`` (checked by apt against
    Debian's keyring) if they are not there."""
    folder = cache_dir / "sources" / "debian"
    found = {name: _tarballs(folder, name) for name in SOURCE_PACKAGES}
    missing = [name for name, pair in found.items() if pair is None]
    if missing:
        on_line(f"Fetching Debian's sources of {', '.join(missing)} with apt-get (once)...")
        fetch_debian_sources(missing, folder)
        found = {name: _tarballs(folder, name) for name in SOURCE_PACKAGES}
    result = {name: pair for name, pair in found.items() if pair is not None}
    if len(result) != len(SOURCE_PACKAGES):
        lacking = ", ".join(n for n in SOURCE_PACKAGES if n not in result)
        raise StubError(f"apt-get source left no tarballs of {lacking} in {folder}")
    return result


def _tarballs(folder: Path, package: str) -> tuple[Path, Path] | None:
    orig = sorted(folder.glob(f"{package}_*.orig.tar.*"))
    debian = sorted(folder.glob(f"{package}_*.debian.tar.*"))
    return (orig[-1], debian[-1]) if orig and debian else None


def fetch_debian_sources(packages: Sequence[str], folder: Path) -> None:
    """``apt-get source --download-only`` of ``packages`` (bookworm) into ``folder``, with a
    sources list of its own that names apt's configured Debian mirror."""
    if not shutil.which("apt-get"):
        raise StubError(
            f"cannot fetch Debian's sources of {', '.join(packages)} to build the portable "
            f"Python: no apt-get here; put their orig and debian tarballs into {folder}, or "
            f"use a published stub (--stub-dir)"
        )
    folder.mkdir(parents=True, exist_ok=True)
    lists = folder / "lists"
    (lists / "partial").mkdir(parents=True, exist_ok=True)
    sources = folder / "sources.list"
    keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"
    sources.write_text(f"deb-src [signed-by={keyring}] {debian_mirror()} {DEBIAN_SUITE} main\n")
    options = ["-o", f"Dir::Etc::SourceList={sources}", "-o", "Dir::Etc::SourceParts=/dev/null"]
    options += ["-o", f"Dir::State::Lists={lists}"]
    what = "fetching Debian's sources with apt-get"
    run_tool(["apt-get", "-q", *options, "update"], what=what, timeout=STEP_TIMEOUT, cwd=folder)
    command = ["apt-get", "-q", *options, "source", "--download-only", *packages]
    run_tool(command, what=what, timeout=STEP_TIMEOUT, cwd=folder)


#: a Debian mirror to fetch the sources from where apt has none (Ubuntu, say)
MIRROR_ENV = "LOCKSHIP_DEBIAN_MIRROR"


def debian_mirror() -> str:
    """``$LOCKSHIP_DEBIAN_MIRROR``, else the Debian mirror apt uses here (deb822 ``.sources``
    or one-line lists)."""
    if os.environ.get(MIRROR_ENV):
        return os.environ[MIRROR_ENV].rstrip("/")
    files = [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]
    for path in files:
        try:
            text = path.read_text()
        except OSError:
            continue
        if path.suffix == ".sources":
            for stanza in re.split(r"\n\s*\n", text):
                fields = {
                    m.group(1).lower(): m.group(2).strip()
                    for m in re.finditer(r"^([A-Za-z-]+):\s*(.*)$", stanza, re.MULTILINE)
                }
                uris = fields.get("uris", "").split()
                suites = fields.get("suites", "").split()
                if "deb" in fields.get("types", "").split() and uris and _plain_debian(suites):
                    return uris[0].rstrip("/")
        else:
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line).split()
                if len(words) >= 3 and words[0] == "deb" and _plain_debian(words[2:3]):
                    return words[1].rstrip("/")
    raise StubError(
        "no Debian mirror is configured in /etc/apt/sources.list(.d) to fetch the portable "
        f"Python's sources from: set ${MIRROR_ENV} to one (with Debian's archive keyring "
        "installed), or use a stub made elsewhere (--stub-dir)"
    )


def _plain_debian(suites: Sequence[str]) -> bool:
    """The main archive's suites (not -security/-updates, not third-party repositories)."""
    return any(
        re.fullmatch(r"(bookworm|bullseye|trixie|sid|stable|oldstable|testing)", s) for s in suites
    )
