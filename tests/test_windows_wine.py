"""win-64 installers built here and run under Wine, with a stub frozen by the official Windows
CPython under Wine from this checkout.

These tests need what ``scripts/winereach.py`` prepares (``.ci/run`` does it when the machine
allows): a Wine prefix with a bcryptprimitives.dll stand-in and the win-64 stub for the current
stub sources, in ``$LOCKSHIP_WINE_CACHE`` (default ``~/.cache/lockship/wine``). Without them
every test here skips with a one-line reason. Wine is not Windows: see docs/windows-wine.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

import pytest

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
)
from tests.runners import Run, load_script, run_lockship

pytestmark = pytest.mark.e2e

if DEMO_PLATFORM != "linux-64":
    # scripts/winereach.py (loaded below) imports fcntl, and Wine here is x86_64 Linux's
    pytest.skip(f"Wine reach runs on linux-64, not {DEMO_PLATFORM}", allow_module_level=True)


winereach = load_script("winereach")
CACHE = winereach.Cache(winereach.default_cache())
#: the prefix compiled into the packages: conda's text placeholder
PLACEHOLDER = "/opt/anaconda1anaconda2anaconda3"
HELLO_BAT = f"@echo off\r\necho hello from {PLACEHOLDER}\r\necho data=%LSWIN_DATA%\r\n"
NAMES = {"lswin-hello", "lswin-data"}
#: the folder the .exe's launcher unpacks the program into (lockship-XXXXXXXX)
LAUNCHER_FOLDER = "lockship-" + "[0-9a-f]" * 8
#: what the launcher, the installer and (in older installers) PyInstaller's one-file bootloader
#: leave in temporary folders
LEFTOVERS = (LAUNCHER_FOLDER, ".lockship-tmp-*", "_MEI*")


@dataclass(frozen=True)
class Wine:
    """The prepared Wine prefix, and this module's folder in it (``C:\\lockship-test-...``)."""

    base: Path

    @property
    def drive_c(self) -> Path:
        return Path(CACHE.drive_c)

    def windows(self, path: Path) -> str:
        """``C:\\...`` for a path on the prefix's drive C."""
        return str(PureWindowsPath("C:\\", *path.relative_to(self.drive_c).parts))

    def unix(self, windows: str) -> Path:
        """The file a ``C:\\...`` path names (Wine matches names without regard to case)."""
        parts = PureWindowsPath(windows).parts
        assert parts[0].upper() == "C:\\", windows
        path = self.drive_c
        for part in parts[1:]:
            found = [p for p in path.iterdir() if p.name.lower() == part.lower()] or [path / part]
            path = found[0]
        return path

    def run(self, *argv: str | Path, timeout: float = 300) -> Run:
        """A Windows program, stdin from /dev/null, stdout and stderr on pipes.

        Run again (with a warning) when Wine failed to start the installer's program
        (:func:`wine_failed_to_start`): that happened once in a CI run and in none of 80 runs
        by hand, loaded or not; no Windows has that failure.
        """
        for attempt in range(1, WINE_ATTEMPTS + 1):
            process = subprocess.run(
                ["wine", *map(str, argv)],
                stdin=subprocess.DEVNULL,
                capture_output=True,
                encoding="utf-8",
                errors="replace",
                env=winereach.wine_env(CACHE),
                timeout=timeout,
                check=False,
            )
            run = Run(process.returncode, process.stdout, process.stderr)
            if not wine_failed_to_start(run) or attempt == WINE_ATTEMPTS:
                return run
            message = f"Wine failed to start a process, attempt {attempt}: {run.stderr!r}"
            warnings.warn(message, stacklevel=2)
        raise AssertionError("unreachable")

    def batch(self, *lines: str) -> Run:
        """``cmd /c`` a batch file (CRLF) holding ``lines``: no quoting through Wine's argv."""
        script = self.base / f"run-{uuid.uuid4().hex[:8]}.bat"
        script.write_bytes("\r\n".join(["@echo off", *lines, ""]).encode())
        return self.run("cmd", "/c", self.windows(script))

    def leftovers(self) -> set[Path]:
        """Temporary folders the stub or the installer made, in Wine's temp folders and here."""
        folders = [
            *self.drive_c.glob("users/*/Temp"),
            *self.drive_c.glob("users/*/AppData/Local/Temp"),
            self.drive_c / "windows" / "temp",
            self.drive_c,
            self.base,
        ]
        return {p for f in folders for pattern in LEFTOVERS for p in f.glob(pattern)}


@pytest.fixture(scope="module")
def wine() -> Iterator[Wine]:
    reason = winereach.ready_reason(CACHE)
    if reason:
        pytest.skip(f"Windows under Wine: {reason}")
    with winereach.locked(CACHE.root):  # the prefix is shared with scripts/winereach.py
        base = CACHE.drive_c / f"lockship-test-{uuid.uuid4().hex[:8]}"
        base.mkdir()
        try:
            yield Wine(base)
        finally:
            subprocess.run(
                ["wineserver", "-w"], env=winereach.wine_env(CACHE), check=False, timeout=120
            )
            shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def leftovers_before(wine: Wine) -> set[Path]:
    return wine.leftovers()


@pytest.fixture(scope="module")
def installer(
    wine: Wine,
    leftovers_before: set[Path],
    tmp_path_factory: pytest.TempPathFactory,
    download_cache: Path,
) -> Path:
    """A win-64 installer: a batch program with a text placeholder and a noarch activate.d
    hook, built here with the stub frozen under Wine."""
    base = tmp_path_factory.mktemp("wine")
    channel = base / "channel"
    write_conda_package(
        channel,
        "lswin-hello",
        "1.0",
        subdir="win-64",
        files={
            "Library/bin/hello.bat": HELLO_BAT,
            "Library/share/lswin/prefix.txt": f"prefix={PLACEHOLDER}\n",
        },
        text_placeholders={
            "Library/bin/hello.bat": PLACEHOLDER,
            "Library/share/lswin/prefix.txt": PLACEHOLDER,
        },
        depends=["lswin-data"],
    )
    write_conda_package(
        channel,
        "lswin-data",
        "2.0",
        files={"etc/conda/activate.d/lswin-data.bat": "@set LSWIN_DATA=1\r\n"},
    )
    index_channel(channel)
    workspace = base / "workspace"
    workspace.mkdir()
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, "win-64")
        write_pixi_lock(workspace / "pixi.lock", {"win-64": records}, channel_url=server.url)
        (workspace / "pixi.toml").write_text('[workspace]\nname = "lswin"\nversion = "1.0"\n')
        result = run_lockship(
            "build",
            workspace,
            "-p",
            "win-64",
            "--stub",
            f"win-64={CACHE.stub()}",
            "-o",
            base / "out",
            "--cache-dir",
            download_cache,
        )
    assert result.returncode == 0, result.stderr
    built = Path(result.stdout.strip().splitlines()[-1])
    assert built.name == "lswin-1.0-win-64.exe"
    return built


#: how often :meth:`Wine.run` tries a program that Wine failed to start
WINE_ATTEMPTS = 3


def wine_failed_to_start(run: Run) -> bool:
    """Whether ``run`` is Wine failing to start the installer's program, and nothing else.

    Wine's NtCreateUserProcess reports STATUS_INTERNAL_ERROR when the new process ends before it
    has started; the launcher then says so in one line, before the program could print any.
    """
    return (
        run.returncode == 1
        and not run.stdout
        and run.stderr.strip() == "ERROR: cannot start the installer's program: Internal error"
    )


def ok(run: Run) -> Run:
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def records(prefix: Path) -> set[str]:
    return {p.name.rsplit("-", 2)[0] for p in (prefix / "conda-meta").glob("*.json")}


def assert_installed(wine: Wine, prefix: Path) -> None:
    assert records(prefix) == NAMES
    activate = (prefix / "activate.bat").read_bytes()
    assert b"\r\r" not in activate and activate.endswith(b"\r\n")
    assert b"\n" not in activate.replace(b"\r\n", b""), activate  # every line ends in CRLF
    assert (prefix / "activate.ps1").is_file() and (prefix / "uninstall.bat").is_file()
    assert not (prefix / "activate.sh").exists()
    # conda writes text placeholders on Windows with forward slashes
    relocated = wine.windows(prefix).replace("\\", "/")
    prefix_txt = (prefix / "Library" / "share" / "lswin" / "prefix.txt").read_text()
    assert prefix_txt == f"prefix={relocated}\n"
    assert PLACEHOLDER not in (prefix / "Library" / "bin" / "hello.bat").read_text()


def test_only_wines_failure_to_start_a_process_is_run_again() -> None:
    # what the launcher prints then (seen once in a CI run with the one-file bootloader of the
    # time, as "CreateProcessW: Internal error."), and what other failures look like
    failed = "ERROR: cannot start the installer's program: Internal error\n"
    assert wine_failed_to_start(Run(1, "", failed))
    assert not wine_failed_to_start(Run(2, "", failed))
    assert not wine_failed_to_start(Run(1, "Installing lswin 1.0\n", failed))
    denied = "ERROR: cannot start the installer's program: Access denied\n"
    assert not wine_failed_to_start(Run(1, "", denied))
    assert not wine_failed_to_start(Run(1, "", "ERROR: the prefix C:\\x is not empty\n"))
    assert not wine_failed_to_start(Run(0, "done\n", ""))


def test_help_and_info(wine: Wine, installer: Path) -> None:
    assert ok(wine.run(installer, "--help")).stdout.startswith("usage: lswin-1.0-win-64.exe")
    info = json.loads(ok(wine.run(installer, "--info", "--json")).stdout)
    assert info["platform"] == "win-64"
    assert {p["name"] for p in info["packages"]} == NAMES


def test_installs_activates_and_refuses_a_second_time(wine: Wine, installer: Path) -> None:
    prefix = wine.base / "env"
    installed = ok(wine.run(installer, "--prefix", wine.windows(prefix), "-b"))
    assert "Traceback" not in installed.stderr
    assert f"Installed lswin 1.0 into {wine.windows(prefix)}" in installed.stdout
    assert_installed(wine, prefix)
    hello = ok(wine.batch(f'call "{wine.windows(prefix)}\\activate.bat"', "call hello.bat"))
    relocated = wine.windows(prefix).replace("\\", "/")
    assert hello.stdout.splitlines() == [f"hello from {relocated}", "data=1"]

    again = wine.run(installer, "--prefix", wine.windows(prefix), "-b")
    assert again.returncode == 1, again.stdout + again.stderr
    assert len(again.error_lines) == 1 and "Traceback" not in again.stderr, again.stderr
    error = again.error_lines[0]
    assert error.startswith(f"ERROR: the prefix {wine.windows(prefix)} exists and is not empty")
    log = re.search(r"\(details: (.+\.log)\)$", error)
    assert log, error
    assert wine.unix(log.group(1)).is_file(), log.group(1)
    wine.unix(log.group(1)).unlink()  # the prefix is kept between sessions
    assert records(prefix) == NAMES


def test_a_damaged_exe_says_so_before_its_program_runs(wine: Wine, installer: Path) -> None:
    """The launcher checks its frames: a flipped byte among them, or a file cut short inside
    them, gets one line and exit 1; nothing is installed and its folder goes."""
    data = installer.read_bytes()
    from lockship.builder.stubs.pack import read_layout

    stub = CACHE.stub()
    layout = read_layout(stub)
    assert data.startswith(stub.read_bytes()) and layout.unpacker_size < 300_000
    flipped = bytearray(data)
    flipped[layout.frames_offset + layout.frames_size // 2] ^= 0x01
    cut = data[: layout.frames_offset + layout.frames_size // 2]
    for name, content, why in [
        ("flipped.exe", bytes(flipped), "a frame of its program does not decode"),
        ("cut.exe", cut, "a frame of its program is cut short"),
    ]:
        damaged = wine.base / "damaged" / name
        damaged.parent.mkdir(exist_ok=True)
        damaged.write_bytes(content)
        prefix = wine.base / f"never-{name}"
        run = wine.run(damaged, "--prefix", wine.windows(prefix), "-b")
        assert (run.returncode, run.stdout) == (1, ""), run.stdout + run.stderr
        assert run.stderr.strip() == (
            f"ERROR: the installer file {wine.windows(damaged)} is damaged ({why}); "
            "download it again"
        )
        assert not prefix.exists()


def test_prefix_with_a_space_installs_and_uninstalls(wine: Wine, installer: Path) -> None:
    prefix = wine.base / "my env"
    ok(wine.run(installer, "--prefix", wine.windows(prefix), "-b"))
    assert_installed(wine, prefix)
    hello = ok(
        wine.batch(
            f'call "{wine.windows(prefix)}\\activate.bat"',
            "call hello.bat",
            f'call "{wine.windows(prefix)}\\uninstall.bat" -b',
        )
    )
    relocated = wine.windows(prefix).replace("\\", "/")
    assert hello.stdout.splitlines()[:2] == [f"hello from {relocated}", "data=1"]
    deadline = time.monotonic() + 60  # uninstall.bat removes the prefix from a started cmd
    while prefix.exists() and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not prefix.exists(), sorted(p.name for p in prefix.iterdir())


def test_stdin_from_dev_null_without_batch_installs_without_asking(
    wine: Wine, installer: Path
) -> None:
    prefix = wine.base / "quiet"
    run = ok(wine.run(installer, "--prefix", wine.windows(prefix), timeout=180))
    assert "[Y/n]" not in run.stdout + run.stderr
    assert records(prefix) == NAMES


def test_never_unpacks_into_temp(wine: Wine, installer: Path) -> None:
    """The launcher unpacks the program into %LOCALAPPDATA% (the default prefix's folder) and,
    relaunched for another prefix, next to that prefix: %TEMP% never sees its folder."""
    temps = [*wine.drive_c.glob("users/*/Temp"), *wine.drive_c.glob("users/*/AppData/Local/Temp")]
    local = list(wine.drive_c.glob("users/*/AppData/Local"))
    for folder in local:  # a default prefix an interrupted run left behind
        shutil.rmtree(folder / "lswin", ignore_errors=True)
    seen: set[str] = set()
    seen_local: set[str] = set()
    seen_next: set[str] = set()
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            seen.update(str(p) for t in temps for p in t.glob(LAUNCHER_FOLDER))
            seen_local.update(str(p) for f in local for p in f.glob(LAUNCHER_FOLDER))
            seen_next.update(str(p) for p in wine.base.glob(f".lockship-tmp-*/{LAUNCHER_FOLDER}"))
            time.sleep(0.005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        elsewhere = wine.base / "elsewhere"
        ok(wine.run(installer, "--prefix", wine.windows(elsewhere), "-b"))
        assert records(elsewhere) == NAMES
        ok(wine.run(installer, "-b"))  # the default prefix, %LOCALAPPDATA%\lswin
    finally:
        stop.set()
        watcher.join()
    default = [f / "lswin" for f in local if (f / "lswin").is_dir()]
    try:
        assert len(default) == 1 and records(default[0]) == NAMES
        assert seen == set(), f"unpacked into %TEMP%: {sorted(seen)}"
        assert seen_local, "the watcher never saw the launcher unpack into %LOCALAPPDATA%"
        assert seen_next, f"no unpacking next to the prefix: {seen_local=}"
    finally:
        for folder in default:
            shutil.rmtree(folder, ignore_errors=True)


def _certificate(folder: Path) -> tuple[Path, Path]:
    """A throw-away self-signed code-signing certificate and its key."""
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"),
            *("-subj", "/CN=lockship test signer", "-keyout", key, "-out", cert),
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    return cert, key


def _verify(installer: Path, cert: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["osslsigncode", "verify", "-CAfile", str(cert), "-in", str(installer)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_a_signed_installer_verifies_checks_and_installs(
    wine: Wine, installer: Path, tmp_path: Path, download_cache: Path
) -> None:
    cert, key = _certificate(tmp_path)
    sign = (
        f"osslsigncode sign -certs {cert} -key {key} -n lswin -in {{file}} -out {{file}}.signed"
        " && mv {file}.signed {file}"
    )
    workspace = installer.parent.parent / "workspace"
    out = tmp_path / "signed"
    built = run_lockship(
        "build",
        workspace,
        "-p",
        "win-64",
        "--stub",
        f"win-64={CACHE.stub()}",
        "-o",
        out,
        "--cache-dir",
        download_cache,
        "--sign-command",
        sign,
    )
    assert built.returncode == 0, built.stderr
    signed = Path(built.stdout.strip().splitlines()[-1])
    assert signed.stat().st_size > installer.stat().st_size  # the certificate table
    verified = _verify(signed, cert)
    assert "Signature verification: ok" in verified.stdout, verified.stdout + verified.stderr
    # SHA256SUMS lists the signed bytes
    signed_sha256 = hashlib.sha256(signed.read_bytes()).hexdigest()
    sbom = signed.with_name(signed.name.removesuffix(".exe") + ".cdx.json")
    listed = (out / "SHA256SUMS").read_text().splitlines()
    assert listed == sorted(
        [
            f"{signed_sha256}  {signed.name}",
            f"{hashlib.sha256(sbom.read_bytes()).hexdigest()}  {sbom.name}",
        ],
        key=lambda line: line.split("  ")[1],
    )
    # the SBOM's root component is the signed file
    (root_hash,) = json.loads(sbom.read_text())["metadata"]["component"]["hashes"]
    assert root_hash == {"alg": "SHA-256", "content": signed_sha256}
    checked = ok(wine.run(signed, "--check")).stdout
    assert "OK: " in checked and "matches SHA256SUMS" in checked
    prefix = wine.base / "signed-env"
    ok(wine.run(signed, "--prefix", wine.windows(prefix), "-b"))
    assert_installed(wine, prefix)

    # a byte flipped in the payload after signing: both checks fail
    from lockship.stub.shared.payload import read_payload

    entry = read_payload(signed).entries[0]
    data = bytearray(signed.read_bytes())
    data[entry.offset + entry.size // 2] ^= 0x01
    damaged = tmp_path / "damaged" / signed.name
    damaged.parent.mkdir()
    damaged.write_bytes(bytes(data))
    assert "Signature verification: ok" not in _verify(damaged, cert).stdout
    refused = wine.run(damaged, "--check")
    assert refused.returncode == 1, refused.stdout + refused.stderr
    assert f"{entry.name} is corrupt inside the installer" in refused.error_lines[0]


#: a Windows program that opens FILE as the launcher holds its .lock (no sharing), says so and
#: waits until its stdin closes: an installer that is still running, for the sweep
HOLDER_C = r"""#include <windows.h>
#include <stdio.h>
int wmain(int argc, wchar_t **argv) {
    HANDLE lock = CreateFileW(argv[1], GENERIC_WRITE, 0, NULL, OPEN_EXISTING, 0, NULL);
    if (argc != 2 || lock == INVALID_HANDLE_VALUE) return 1;
    printf("held\n");
    fflush(stdout);
    getchar();
    return 0;
}
"""


def test_the_next_installer_removes_the_folders_of_installers_killed_outright(
    wine: Wine, installer: Path, tmp_path: Path
) -> None:
    """A launcher's folder whose .lock nobody holds (its installer was killed) goes with the
    next installer's start; one whose .lock is held (a running installer) and one that is not
    a launcher's stay."""
    local = next(iter(wine.drive_c.glob("users/*/AppData/Local")))
    stale, running = local / "lockship-0badf00d", local / "lockship-00c0ffee"
    not_ours = local / "lockship-not-ours"
    for folder in (stale, running, not_ours):
        (folder / "stub").mkdir(parents=True)
        (folder / "stub" / "lockship-stub.exe").write_bytes(b"MZ left behind")
        (folder / ".lock").write_bytes(b"")
    source = tmp_path / "holder.c"
    source.write_text(HOLDER_C)
    holder = wine.base / "holder.exe"
    subprocess.run(
        ["x86_64-w64-mingw32-gcc", "-municode", "-o", holder, source], check=True, timeout=120
    )
    hold = subprocess.Popen(
        ["wine", holder, wine.windows(running / ".lock")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=winereach.wine_env(CACHE),
    )
    try:
        assert hold.stdout is not None and hold.stdout.readline().rstrip() == b"held"
        prefix = wine.base / "after-a-kill"
        ok(wine.run(installer, "--prefix", wine.windows(prefix), "-b"))
        assert records(prefix) == NAMES
        assert not stale.exists()
        assert (running / "stub" / "lockship-stub.exe").is_file()
        assert (not_ours / ".lock").is_file()
    finally:
        hold.communicate(b"\n", timeout=60)
        shutil.rmtree(running, ignore_errors=True)
        shutil.rmtree(not_ours, ignore_errors=True)
        shutil.rmtree(stale, ignore_errors=True)
    assert hold.returncode == 0


def test_the_windows_freeze_is_reproducible(wine: Wine, tmp_path: Path) -> None:
    """Freezing the same sources again under Wine, with the launcher compiled again, gives the
    prepared stub's bytes (PyInstaller stamps the .exe with SOURCE_DATE_EPOCH and lists modules
    in hash-seed order; the launcher is linked without a time stamp)."""
    source = CACHE.root / f"src-{uuid.uuid4().hex[:8]}"
    again = wine.base / "again" / "lockship-stub-win-64.exe"
    again.parent.mkdir()
    try:
        winereach.copy_sources(source)
        launcher = source / "lockship-launch.exe"
        winereach.compile_launcher(launcher)
        winereach.wine_python(
            CACHE,
            winereach.windows_path(source / "scripts" / "freeze_stub.py"),
            "-o",
            winereach.windows_path(again),
            "--unpacker",
            winereach.windows_path(launcher),
            log=tmp_path / "freeze.log",
        )
    finally:
        shutil.rmtree(source, ignore_errors=True)
    assert again.read_bytes() == CACHE.stub().read_bytes()


def test_nothing_left_in_temporary_folders(
    wine: Wine, installer: Path, leftovers_before: set[Path]
) -> None:
    """Last in this module: after every run above, no launcher's or relaunch's folder stays."""
    subprocess.run(["wineserver", "-w"], env=winereach.wine_env(CACHE), check=False, timeout=120)
    assert wine.leftovers() - leftovers_before == set()
