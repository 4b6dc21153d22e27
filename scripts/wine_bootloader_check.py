#!/usr/bin/env python3
"""Run lockship's Windows ``.exe`` layout through PyInstaller's real Windows bootloader under Wine.

What it checks: lockship writes ``[bootloader][package entries][PyInstaller archive][index]
[trailer]`` (see docs/payload-format.md) and relies on the bootloader searching backwards from
the end of the file for the *last* archive cookie. This script takes ``run_d.exe`` (debug) and
``run.exe`` (release) from the PyInstaller win_amd64 wheel of the installed PyInstaller version,
appends a CArchive made by PyInstaller's own writer (three files, one zlib-compressed, one in a
sub-folder) and builds, with each bootloader:

* ``plain``: bootloader + archive, as PyInstaller itself lays out a one-file program;
* ``lockship``: ``builder.installer.write_installer`` with one real win-64 ``.conda``;
* ``lockship_poison_garbage``: plus a package file holding the cookie magic and a forged cookie;
* ``lockship_poison_archive``: plus a package file that is a whole one-file program (bootloader +
  its own archive with ``POISON.txt``);
* ``lockship_big``: 400 extra entries, so index + trailer (~260 kB) is far longer than the
  bootloader's 8192-byte search chunk;
* ``lockship_straddle``: index + trailer tuned so the real cookie magic straddles the boundary of
  the bootloader's first search chunk;
* ``naive_poison_garbage`` / ``naive_poison_archive`` (negative controls): the poisoned file
  simply appended after the archive, i.e. the layout lockship avoids.

Each ``.exe`` runs under ``wine`` while a thread hashes every file that appears in the prefix's
``_MEI*`` temporary folder (the bootloader removes it on exit).

What it proves: for every lockship layout the real bootloader found the real archive's cookie (the
debug bootloader's ``cookie found at offset`` equals the archive entry's cookie), extracted exactly
the stub archive's files with the right sha256, and got as far as loading ``python311.dll``; the
naive controls are hijacked (the forged cookie names ``evil.dll``; the appended program's archive
is extracted instead), so the check can tell the difference.

What it does not prove: the archive holds no Python DLL, so nothing after the bootloader runs (no
Python start-up, no lockship stub code); Wine is not Windows (no Defender, no SmartScreen, no
code-signing checks, Wine's own PE loader and file APIs).

Run (about a minute; needs ``wine`` and network for the first wheel download)::

    python scripts/wine_bootloader_check.py [--work DIR] [--install-wine]

Exit status: 0 when every case behaves as expected, 1 otherwise, 2 when ``wine`` is missing.
Per-case output is kept in ``DIR/build/<case>.log``.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.dont_write_bytecode = True  # leave no __pycache__ in the repository

import PyInstaller  # noqa: E402
from lockship.builder.installer import (  # noqa: E402
    ARCHIVE_ENTRY,
    COOKIE,
    COOKIE_MAGIC,
    onefile_archive_start,
    write_installer,
)
from lockship.stub.manifest import Manifest, PackageInfo  # noqa: E402
from lockship.stub.payload import read_payload  # noqa: E402
from PyInstaller.archive.writers import CArchiveWriter  # noqa: E402

from tests.factories import write_conda_package  # noqa: E402

BOOT_DIR_IN_WHEEL = "PyInstaller/bootloader/Windows-64bit-intel"
BOOTLOADERS = (("run_d.exe", "debug"), ("run.exe", "release"))
PYLIB_NAME = "python311.dll"  # named in the cookie, deliberately not in the archive
WINE_TIMEOUT = 120
CASES = (
    "plain",
    "lockship",
    "lockship_poison_garbage",
    "lockship_poison_archive",
    "lockship_big",
    "lockship_straddle",
    "naive_poison_garbage",
    "naive_poison_archive",
)
# the debug bootloader reads 8192-byte chunks backwards from the end: a tail of 8108 bytes puts
# the cookie at EOF-8196, so its 8 magic bytes span EOF-8196..EOF-8189, across the first chunk
STRADDLE_TAIL = 8192 + 4 - COOKIE.size


@dataclass(frozen=True)
class Case:
    label: str
    boot: str  # "debug" or "release"
    exe: Path
    real_cookie_at: int  # offset of the stub archive's own cookie
    expect_real: bool  # False for the naive controls, which should be hijacked


@dataclass
class Outcome:
    case: Case
    rc: int | None
    output: str
    cookies: list[int] = field(default_factory=list)
    extracted: dict[str, str] = field(default_factory=dict)  # relative path -> sha256
    dll: str = ""

    def found_real_cookie(self) -> bool | None:
        """None for the release bootloader, which does not log the cookie offset."""
        if not self.cookies:
            return None
        return all(c == self.case.real_cookie_at for c in self.cookies)

    def passed(self, expected: dict[str, str]) -> bool:
        real = self.found_real_cookie()
        if self.case.expect_real:
            return real is not False and self.extracted == expected and self.dll == PYLIB_NAME
        return real is not True and self.extracted != expected


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- inputs ------------------------------------------------------------------------------------


def ensure_wine(install: bool) -> str | None:
    """Return ``wine --version``, installing Debian's wine64 first when asked; None if missing."""
    if shutil.which("wine") is None and install:
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "update", "-q"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-q", "wine64"], check=True, env=env)
    if shutil.which("wine") is None:
        return None
    out = subprocess.run(["wine", "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def ensure_wheel(whl_dir: Path, version: str) -> Path:
    pattern = f"pyinstaller-{version}-*win_amd64.whl"
    if not list(whl_dir.glob(pattern)):
        subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                *("--platform", "win_amd64", "--python-version", "3.11"),
                *(f"pyinstaller=={version}", "-d", str(whl_dir)),
            ],
            check=True,
        )
    return sorted(whl_dir.glob(pattern))[0]


def ensure_prefix(prefix: Path) -> None:
    if not (prefix / "drive_c").is_dir():
        # no Mono/Gecko: their install prompts would block and nothing here needs them
        env = wine_env(prefix) | {"WINEDLLOVERRIDES": "mscoree,mshtml="}
        subprocess.run(["wineboot", "-i"], env=env, check=True, capture_output=True)


def wine_env(prefix: Path) -> dict[str, str]:
    env = dict(os.environ, WINEPREFIX=str(prefix), WINEDEBUG="-all")
    env.pop("DISPLAY", None)  # no GUI message boxes: errors go to the console
    return env


def write_carchive(path: Path, src_dir: Path, files: dict[str, tuple[bytes, bool, str]]) -> None:
    """A CArchive from PyInstaller's own writer; files: name -> (content, compress, typecode)."""
    entries = []
    for name, (content, compress, typecode) in files.items():
        src = src_dir / name.replace("\\", "__")
        src.write_bytes(content)
        entries.append((name, str(src), compress, typecode))
    CArchiveWriter(str(path), entries, PYLIB_NAME)


def package_info(path: Path, name: str, url_suffix: str = "") -> PackageInfo:
    """A win-64 manifest entry for any file (the bootloader never looks inside packages)."""
    data = path.read_bytes()
    digest = sha256(data)
    record = {
        "name": name,
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "depends": [],
        "subdir": "win-64",
        "sha256": digest,
        "size": len(data),
    }
    return PackageInfo(
        entry=f"win-64/{path.name}",
        file_name=path.name,
        name=name,
        version="1.0",
        build="0",
        subdir="win-64",
        url=f"https://example.invalid/win-64/{path.name}{url_suffix}",
        channel="https://example.invalid",
        sha256=digest,
        size=len(data),
        record=record,
    )


def build_lockship(out: Path, stub: Path, packages: list[tuple[PackageInfo, Path]]) -> int:
    """Write a win-64 installer; return the offset of its archive's cookie."""
    manifest = Manifest(
        name="demo",
        version="1.0",
        platform="win-64",
        environment="default",
        lockship_version="0.1.0",
        packages=tuple(info for info, _ in packages),
    )
    write_installer(out, stub, manifest, [(info.entry, path) for info, path in packages])
    archive = read_payload(out).entries[-1]
    if archive.name != ARCHIVE_ENTRY:
        raise RuntimeError(f"{out}: last payload entry is {archive.name}, not {ARCHIVE_ENTRY}")
    return archive.offset + archive.size - COOKIE.size


def build_straddle(out: Path, stub: Path, packages: list[tuple[PackageInfo, Path]]) -> int:
    """Pad the first package's URL until index + trailer is exactly STRADDLE_TAIL bytes."""
    pad = 0
    for _ in range(5):
        first, path = packages[0]
        padded = replace(first, url=f"{first.url}?{'p' * pad}") if pad else first
        cookie_at = build_lockship(out, stub, [(padded, path), *packages[1:]])
        tail = out.stat().st_size - cookie_at - COOKIE.size
        if tail == STRADDLE_TAIL:
            return cookie_at
        pad += STRADDLE_TAIL - tail - (0 if pad else 1)  # the "?" costs one byte
    raise RuntimeError(f"could not tune {out} to a {STRADDLE_TAIL}-byte tail (got {tail})")


def build_cases(build: Path, wheel: Path) -> tuple[list[Case], dict[str, str]]:
    src = build / "src"
    src.mkdir(parents=True)
    stub_files = {
        "hello.txt": (b"hello from the real stub archive\n", False, "x"),
        # CArchiveWriter turns '/' into '\\' only on Windows, and the Windows bootloader makes
        # sub-folders only for '\\'
        "data\\blob.bin": (random.Random(3).randbytes(20000), True, "x"),
        "helper.dll": (b"MZ not really a dll, just a binary entry\n" * 10, False, "b"),
    }
    expected = {n.replace("\\", "/"): sha256(c) for n, (c, _, _) in stub_files.items()}
    write_carchive(build / "stub.pkg", src, stub_files)
    write_carchive(
        build / "poison.pkg", src, {"POISON.txt": (b"from the POISON archive\n", False, "x")}
    )
    with zipfile.ZipFile(wheel) as whl:
        boots = {name: whl.read(f"{BOOT_DIR_IN_WHEEL}/{name}") for name, _ in BOOTLOADERS}
    forged = COOKIE.pack(COOKIE_MAGIC, 4096, 16, 64, 311, b"evil.dll")
    poisons = {
        "garbage": b"poisoned package\n" + random.Random(1).randbytes(8192) + forged + bytes(256),
        "archive": boots["run.exe"] + (build / "poison.pkg").read_bytes(),
    }
    cases = []
    for name, kind in BOOTLOADERS:
        sfx = "_d" if kind == "debug" else ""
        pkgs = build / f"pkgs{sfx}"
        plain = build / f"plain{sfx}.exe"
        plain.write_bytes(boots[name] + (build / "stub.pkg").read_bytes())
        if onefile_archive_start(plain) != len(boots[name]):
            raise RuntimeError(f"{plain}: lockship disagrees on where the archive starts")
        real = {"plain": plain.stat().st_size - COOKIE.size}
        benign_path = write_conda_package(
            pkgs, "benign", "1.0", subdir="win-64", files={"Library/bin/hello.txt": "hi\n"}
        )
        benign = (package_info(benign_path, "benign"), benign_path)
        poisoned = {}
        for pname, blob in poisons.items():
            path = pkgs / f"poison-{pname}-1.0-0.conda"  # raw bytes, not a real .conda
            path.write_bytes(blob)
            poisoned[pname] = (package_info(path, f"poison-{pname}"), path)
        real["lockship"] = build_lockship(build / f"lockship{sfx}.exe", plain, [benign])
        for pname, pkg in poisoned.items():
            out = build / f"lockship_poison_{pname}{sfx}.exe"
            real[f"lockship_poison_{pname}"] = build_lockship(out, plain, [benign, pkg])
        tiny = []
        for i in range(400):
            path = pkgs / f"tiny{i:04d}-1.0-0.conda"
            path.write_bytes(f"tiny package {i}\n".encode())
            tiny.append((package_info(path, f"tiny{i:04d}"), path))
        first = [benign, poisoned["garbage"]]
        real["lockship_big"] = build_lockship(build / f"lockship_big{sfx}.exe", plain, first + tiny)
        real["lockship_straddle"] = build_straddle(
            build / f"lockship_straddle{sfx}.exe", plain, first + tiny[:5]
        )
        for pname, blob in poisons.items():
            out = build / f"naive_poison_{pname}{sfx}.exe"
            out.write_bytes(plain.read_bytes() + blob)
            real[f"naive_poison_{pname}"] = real["plain"]
        for label in CASES:
            exe = build / f"{label}{sfx}.exe"
            expect_real = not label.startswith("naive")
            cases.append(Case(label, kind, exe, real[label], expect_real))
    return cases, expected


# --- running -----------------------------------------------------------------------------------


class TempWatcher:
    """Hash every file in each ``_MEI*`` folder of the prefix's temp folders while the bootloader
    runs (it removes the folder when it exits); polls every 2 ms, the last full read wins."""

    def __init__(self, prefix: Path) -> None:
        self.prefix = prefix
        self.seen: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def roots(self) -> list[Path]:
        users = self.prefix / "drive_c" / "users"
        return [*users.glob("*/Temp"), *users.glob("*/AppData/Local/Temp")]

    def __enter__(self) -> TempWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        roots = self.roots()
        while not self._stop.is_set():
            for root in roots:
                for mei in root.glob("_MEI*"):
                    for path in mei.rglob("*"):
                        try:
                            self.seen[path.relative_to(mei).as_posix()] = sha256(path.read_bytes())
                        except OSError:  # a folder, or removed meanwhile
                            continue
            time.sleep(0.002)


def run_case(case: Case, prefix: Path) -> Outcome:
    for root in TempWatcher(prefix).roots():  # left over by an earlier, interrupted run
        for mei in root.glob("_MEI*"):
            shutil.rmtree(mei)
    with TempWatcher(prefix) as watcher:
        try:
            proc = subprocess.run(
                ["wine", str(case.exe)],
                cwd=case.exe.parent,
                env=wine_env(prefix),
                capture_output=True,
                timeout=WINE_TIMEOUT,
            )
            rc: int | None = proc.returncode
            output = (proc.stderr + proc.stdout).decode("utf-8", "replace")
        except subprocess.TimeoutExpired:
            rc, output = None, f"(timed out after {WINE_TIMEOUT} s)"
        time.sleep(0.2)
    case.exe.with_suffix(".log").write_text(output)
    outcome = Outcome(case, rc, output, extracted=watcher.seen)
    outcome.cookies = [int(h, 16) for h in re.findall(r"cookie found at offset 0x(\w+)", output)]
    dlls = re.findall(r"Failed to load Python DLL '[^']*\\([^'\\]+)'", output)
    outcome.dll = dlls[-1] if dlls else ""
    return outcome


def table(outcomes: list[Outcome], expected: dict[str, str]) -> list[str]:
    rows = [("case", "boot", "magics", "cookie", "extracted", "stopped at", "expect", "result")]
    for o in outcomes:
        real = o.found_real_cookie()
        cookie = "not logged" if real is None else "real" if real else "FORGED/OTHER"
        if not o.extracted:
            got = "nothing"
        elif o.extracted == expected:
            got = f"stub files ({len(expected)}, sha256 ok)"
        else:
            got = ",".join(sorted(o.extracted))
        magics = o.case.exe.read_bytes().count(COOKIE_MAGIC)
        rows.append(
            (
                o.case.label,
                o.case.boot,
                str(magics),
                cookie,
                got,
                o.dll or f"rc={o.rc}",
                "real" if o.case.expect_real else "hijack",
                "ok" if o.passed(expected) else "FAIL",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument(
        "--work",
        type=Path,
        default=Path(tempfile.gettempdir()) / "lockship-wine-check",
        help="folder for the wheel, the Wine prefix and the built .exe files",
    )
    parser.add_argument(
        "--install-wine", action="store_true", help="apt-get install wine64 if wine is missing"
    )
    args = parser.parse_args(argv)
    wine = ensure_wine(args.install_wine)
    if wine is None:
        print(
            "wine not found: apt-get install wine64 (Debian/Ubuntu), or rerun with --install-wine"
        )
        return 2
    work: Path = args.work.resolve()
    (work / "whl").mkdir(parents=True, exist_ok=True)
    wheel = ensure_wheel(work / "whl", PyInstaller.__version__)
    prefix = work / "prefix"
    ensure_prefix(prefix)
    build = work / "build"
    shutil.rmtree(build, ignore_errors=True)
    cases, expected = build_cases(build, wheel)
    print(f"{wine}, PyInstaller {PyInstaller.__version__} bootloaders from {wheel.name}")
    outcomes = []
    for case in cases:
        outcomes.append(run_case(case, prefix))
        print(f"  ran {case.label} ({case.boot})", flush=True)
    subprocess.run(["wineserver", "-w"], env=wine_env(prefix), timeout=60, check=False)
    print("\n".join(table(outcomes, expected)))
    print(f"per-case output: {build}/<case>.log")
    return 0 if all(o.passed(expected) for o in outcomes) else 1


if __name__ == "__main__":
    raise SystemExit(main())
