"""The installer, end to end: the real frozen stub joined to a real payload, run in a subprocess."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from lockship.stub.launch import INSTALLER_ENV, LOG_DIR_ENV, UNPACKED_DIR_ENV
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import iter_entry, read_payload

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    index_channel,
    write_conda_package,
    write_marking_program,
    write_pixi_lock,
    write_stand_in_stub,
)
from tests.runners import Run, run_installer, run_lockship, run_on_terminal

pytestmark = pytest.mark.e2e

PLACEHOLDER_MARK = b"placehold_placehold"
MAGIC = b"MEI\014\013\012\013\016"  # PyInstaller's archive cookie


def single_error(run: Run) -> str:
    assert run.error_lines, run.stderr
    assert len(run.error_lines) == 1, run.stderr
    assert "Traceback" not in run.stderr
    return run.error_lines[0]


def assert_demo_prefix(prefix: Path) -> None:
    hello = subprocess.run([prefix / "bin" / "lsdemo-hello"], capture_output=True, text=True)
    assert hello.stdout.strip() == f"lsdemo-hello from {prefix}"
    where = subprocess.run([prefix / "bin" / "lsdemo-where"], capture_output=True, text=True)
    assert where.stdout.strip() == f"prefix={prefix}"
    greet = subprocess.run([prefix / "bin" / "lsdemo-greet"], capture_output=True, text=True)
    assert greet.stdout.strip() == "greetings from lsdemo_greet", greet.stderr
    link = prefix / "bin" / "lsdemo-hi"
    assert link.is_symlink() and str(link.readlink()) == "lsdemo-hello"
    assert subprocess.run([link], capture_output=True, text=True).stdout.startswith("lsdemo-hello")
    for path in prefix.rglob("*"):
        # conda-meta records the placeholders on purpose (as conda does); files must not
        if path.is_file() and not path.is_symlink() and "conda-meta" not in path.parts:
            assert PLACEHOLDER_MARK not in path.read_bytes(), path
    activated = subprocess.run(
        [
            "bash",
            "-c",
            f'. "{prefix}/activate.sh" && command -v lsdemo-hello && '
            'echo "var=$LSDEMO_ACTIVATED" && echo "path=$PATH"',
        ],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "HOME": os.environ.get("HOME", "/")},
    )
    lines = activated.stdout.splitlines()
    assert lines[0] == str(prefix / "bin" / "lsdemo-hello"), activated.stderr
    assert "var=yes" in lines
    assert f"path={prefix}/bin:/usr/bin:/bin" in lines
    meta = sorted(p.name for p in (prefix / "conda-meta").glob("*.json"))
    assert len(meta) == 4
    assert (prefix / "conda-meta" / "history").read_text().startswith("==> ")
    for name in meta:
        record = json.loads((prefix / "conda-meta" / name).read_text())
        assert record["url"].startswith("http://127.0.0.1:"), record["url"]
    leftovers = {".lockship-stage", ".lockship.lock", "LOCKSHIP-INCOMPLETE.txt", "CACHEDIR.TAG"}
    assert not leftovers & {p.name for p in prefix.iterdir()}
    assert (prefix / "activate.fish").is_file() and (prefix / "activate.ps1").is_file()


def test_the_installer_starts_no_powershell(tmp_path: Path, demo_installer: Path) -> None:
    """rattler would run ``pwsh -v`` while it makes activate.ps1 (PowerShell takes a second or
    more to start); the installer makes the script without starting it."""
    mark = write_marking_program(tmp_path / "bin", "pwsh")
    prefix = tmp_path / "env"
    path = f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}"
    run = run_installer(demo_installer, "-b", "-p", prefix, env={"PATH": path})
    assert run.returncode == 0, run.stderr
    assert "$Env:PATH" in (prefix / "activate.ps1").read_text()
    assert not mark.exists()


@pytest.mark.parametrize("via", ["bash", "sh", "exec"])
def test_install_runs_and_relocates(tmp_path: Path, demo_installer: Path, via: str) -> None:
    prefix = tmp_path / "env"
    run = run_installer(demo_installer, "-b", "-p", prefix, via=via)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == (
        f"Installed lsdemo 1.2.3 into {prefix} (activate: source {prefix}/activate.sh)"
    )
    assert_demo_prefix(prefix)


def test_both_unpack_routes_install_the_same_environment(
    tmp_path: Path, demo_installer: Path
) -> None:
    """Worker processes unpacking (Linux default) and rattler unpacking (elsewhere) agree."""

    def tree(prefix: Path) -> dict[str, object]:
        files: dict[str, object] = {}
        for path in sorted(prefix.rglob("*")):
            rel = str(path.relative_to(prefix))
            if path.is_symlink() or not path.is_file():
                files[rel] = "link" if path.is_symlink() else "dir"
            elif rel.startswith("conda-meta/") and rel.endswith(".json"):
                files[rel] = {k: v for k, v in json.loads(path.read_text()).items() if k != "time"}
            elif rel not in ("conda-meta/history", "conda-meta/lockship"):
                files[rel] = path.read_bytes()
        return files

    prefix = tmp_path / "env"
    trees = []
    for workers in ("0", "2"):
        env = {"LOCKSHIP_UNPACK_WORKERS": workers}
        run = run_installer(demo_installer, "-b", "-p", prefix, env=env)
        assert run.returncode == 0, run.stderr
        assert_demo_prefix(prefix)
        trees.append(tree(prefix))
        shutil.rmtree(prefix)
    assert trees[0] == trees[1]


def test_header_without_gnu_dd_copies_the_stub_with_tail_and_head(
    tmp_path: Path, demo_installer: Path
) -> None:
    """macOS and busybox have no ``dd iflag=skip_bytes``: the header falls back to tail | head."""
    tools = tmp_path / "bsd-tools"
    tools.mkdir()
    refused = tmp_path / "dd-refused"
    dd = tools / "dd"
    dd.write_text(
        "#!/bin/sh\n"
        'for a in "$@"; do case "$a" in iflag=*)\n'
        f'  echo refused >> "{refused}"; echo "dd: unknown operand iflag" >&2; exit 1;;\n'
        "esac; done\n"
        'exec /bin/dd "$@"\n'
    )
    dd.chmod(0o755)
    prefix = tmp_path / "env"
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}"}
    run = run_installer(demo_installer, "-b", "-p", prefix, via="sh", env=env)
    assert run.returncode == 0, run.stderr
    assert refused.read_text() == "refused\n"  # GNU dd was tried once, then the fallback ran
    assert_demo_prefix(prefix)


def test_prefix_with_spaces_and_non_ascii(tmp_path: Path, demo_installer: Path) -> None:
    prefix = tmp_path / "my envs" / "prod ünï"
    run = run_installer(demo_installer, "--batch", "--prefix", prefix)
    assert run.returncode == 0, run.stderr
    assert_demo_prefix(prefix)


def test_info_help_version(demo_installer: Path) -> None:
    info = run_installer(demo_installer, "--info")
    assert info.returncode == 0, info.stderr
    assert info.stdout.startswith(f"lsdemo 1.2.3\nplatform:          {DEMO_PLATFORM}")
    assert "lsdemo-hello" in info.stdout and "python" in info.stdout
    help_ = run_installer(demo_installer, "--help")
    assert help_.returncode == 0
    for flag in ("--prefix", "--batch", "--force", "--info", "--version"):
        assert flag in help_.stdout
    version = run_installer(demo_installer, "--version")
    assert version.returncode == 0
    assert version.stdout.startswith("lsdemo 1.2.3 (installer built by lockship 0.1.0")


def test_usage_error_exits_2(tmp_path: Path, demo_installer: Path) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    run = run_installer(demo_installer, "--bogus", env={**os.environ, "TMPDIR": str(temp)})
    assert run.returncode == 2
    assert single_error(run) == "ERROR: unrecognized arguments: --bogus (see --help)"
    assert list(temp.glob("lockship-*.log")) == []  # the line says it all: no log


def test_non_empty_prefix_needs_force(tmp_path: Path, demo_installer: Path) -> None:
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "keep.txt").write_text("mine")
    run = run_installer(demo_installer, "-b", "-p", prefix)
    assert run.returncode == 1
    assert f"the prefix {prefix} exists and is not empty" in single_error(run)
    assert "-f" in run.error_lines[0]
    assert sorted(p.name for p in prefix.iterdir()) == ["keep.txt"]
    forced = run_installer(demo_installer, "-b", "-f", "-p", prefix)
    assert forced.returncode == 0, forced.stderr
    assert (prefix / "keep.txt").read_text() == "mine"
    assert_demo_prefix(prefix)


def test_prefix_is_a_file(tmp_path: Path, demo_installer: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    run = run_installer(demo_installer, "-b", "-p", target)
    assert run.returncode == 1
    assert f"the prefix {target} is a file" in single_error(run)
    assert target.read_text() == "x"


def test_missing_parents_are_created(tmp_path: Path, demo_installer: Path) -> None:
    prefix = tmp_path / "a" / "b" / "env"
    run = run_installer(demo_installer, "-b", "-p", prefix)
    assert run.returncode == 0, run.stderr
    assert_demo_prefix(prefix)


def test_prefix_longer_than_binary_placeholder(tmp_path: Path, demo_installer: Path) -> None:
    manifest = Manifest.from_dict(read_payload(demo_installer).metadata)
    assert manifest.max_prefix_length
    prefix = tmp_path
    while len(str(prefix)) <= manifest.max_prefix_length:
        prefix = prefix / ("x" * 40)
    run = run_installer(demo_installer, "-b", "-p", prefix)
    assert run.returncode == 1
    line = single_error(run)
    assert f"allow up to {manifest.max_prefix_length}" in line and "shorter prefix" in line
    assert not prefix.exists()


def test_installer_for_another_platform(
    tmp_path: Path, demo_installer: Path, stub_program: Path
) -> None:
    """The program itself refuses a payload for another platform (the header would refuse it
    first: the stub is run on the file directly, as a Windows .exe runs)."""
    other = "osx-arm64"
    installer = installer_for_platform(demo_installer, other, tmp_path)
    process = subprocess.run(
        [stub_program, "--installer", installer, "-b", "-p", tmp_path / "env"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    run = Run(process.returncode, process.stdout, process.stderr)
    assert run.returncode == 1
    assert single_error(run).startswith(
        f"ERROR: this installer is for {other} but this machine is {DEMO_PLATFORM}; "
        f"download the {DEMO_PLATFORM} installer instead (details: "
    )
    assert not (tmp_path / "env").exists()


def installer_for_platform(installer: Path, platform: str, tmp_path: Path) -> Path:
    """``installer``'s packages in a new installer whose manifest says ``platform``."""
    from lockship.builder.output.installer import write_installer

    payload = read_payload(installer)
    manifest = Manifest.from_dict(payload.metadata)
    files = []
    for entry in payload.entries:
        path = tmp_path / "entries" / entry.name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"".join(iter_entry(payload, entry)))
        files.append((entry.name, path))
    stub = write_stand_in_stub(tmp_path / "stand-in-stub", b"never run")
    output = tmp_path / f"other-{platform}.sh"
    write_installer(output, stub, replace(manifest, platform=platform), files)
    return output


def test_header_refuses_another_architecture(
    tmp_path: Path, demo_lock: Path, frozen_stub: Path, download_cache: Path
) -> None:
    """An installer for the other Linux architecture is refused by its shell header before any
    program runs."""
    other = "linux-64" if DEMO_PLATFORM == "linux-aarch64" else "linux-aarch64"
    text = (demo_lock / "pixi.lock").read_text().replace(DEMO_PLATFORM, other)
    (tmp_path / "pixi.lock").write_text(text)
    result = run_lockship(
        "build",
        tmp_path,
        "-p",
        other,
        "--stub",
        frozen_stub,
        "-o",
        tmp_path,
        "--cache-dir",
        download_cache,
    )
    if result.returncode != 0:
        pytest.skip(f"cannot fake a {other} lock here: {result.stderr.strip()}")
    installer = Path(result.stdout.strip().splitlines()[-1])
    run = run_installer(installer, "-b", "-p", tmp_path / "env")
    assert run.returncode == 1
    assert single_error(run).startswith(
        f"ERROR: this installer is for {other} but this machine is "
        f"{os.uname().sysname} {os.uname().machine}"
    )
    assert not (tmp_path / "env").exists()


@pytest.mark.skipif(not DEMO_PLATFORM.startswith("linux-"), reason="glibc is checked on Linux")
def test_header_compares_glibc_versions(tmp_path: Path, demo_installer: Path) -> None:
    """The header compares the machine's glibc (from getconf) with the stub's need numerically."""
    head = demo_installer.read_bytes()[:4096].decode(errors="replace")
    needs = head.split("LOCKSHIP_GLIBC_MIN=", 1)[1].split("\n", 1)[0]
    major, minor = (int(n) for n in needs.split(".")[:2])
    shim = tmp_path / "shim"
    shim.mkdir()
    getconf = shim / "getconf"
    for have, accepted in (
        (f"{major}.{minor}", True),
        (f"{major}.{minor + 10}", True),  # 2.40 > 2.4: numbers, not strings
        (f"{major + 1}.0", True),
        (f"{major}.{minor}.9000", True),
        (f"{major}.{minor - 1}", False),
        (f"{major - 1}.{minor + 50}", False),
    ):
        getconf.write_text(f"#!/bin/sh\necho 'glibc {have}'\n")
        getconf.chmod(0o755)
        env = {"PATH": f"{shim}:{os.environ['PATH']}"}
        run = run_installer(demo_installer, "--version", env=env)
        if accepted:
            assert run.returncode == 0, (have, run.stderr)
        else:
            assert run.returncode == 1, have
            assert single_error(run) == (
                f"ERROR: this installer needs glibc >= {needs}; this machine has {have}"
            )


def test_failure_rolls_back_and_names_a_log(tmp_path: Path, demo_installer: Path) -> None:
    """A damaged archive: one line naming a log with the traceback; no prefix left behind."""
    payload = read_payload(demo_installer)
    entry = max(payload.entries, key=lambda e: e.size)
    damaged = tmp_path / "damaged.sh"
    shutil.copyfile(demo_installer, damaged)
    with open(damaged, "r+b") as f:
        f.seek(entry.offset + entry.size // 2)
        byte = f.read(1)
        f.seek(-1, os.SEEK_CUR)
        f.write(bytes([byte[0] ^ 0xFF]))
    prefix = tmp_path / "env"
    run = run_installer(damaged, "-b", "-p", prefix)
    assert run.returncode == 1
    line = single_error(run)
    assert f"{entry.name} is corrupt inside the installer" in line
    log = Path(line.rsplit("(details: ", 1)[1].rstrip(")"))
    assert "Traceback" in log.read_text()
    assert not prefix.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["damaged.sh"]


def test_payload_with_pyinstaller_magic_bytes_starts(
    tmp_path: Path, demo_channel: Path, frozen_stub: Path
) -> None:
    """A package carrying a frozen program (and PyInstaller's cookie) must not confuse the stub."""
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    write_conda_package(
        channel,
        "carries-a-frozen-program",
        "1.0",
        files={
            # incompressible data is stored verbatim by zstd, so the cookie lands in the payload
            "share/frozen/program": random.randbytes(100_000) + MAGIC + random.randbytes(100_000),
            "share/frozen/cookie": MAGIC * 100,
        },
    )
    index_channel(channel)
    from tests.factories import channel_records

    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, DEMO_PLATFORM)
        write_pixi_lock(tmp_path / "pixi.lock", {DEMO_PLATFORM: records}, channel_url=server.url)
        result = run_lockship(
            "build", tmp_path, "--stub", frozen_stub, "-o", tmp_path, "--cache-dir", tmp_path / "c"
        )
    assert result.returncode == 0, result.stderr
    installer = Path(result.stdout.strip().splitlines()[-1])
    assert MAGIC in installer.read_bytes()[-(1 << 20) :]
    prefix = tmp_path / "env"
    run = run_installer(installer, "-b", "-p", prefix)
    assert run.returncode == 0, run.stderr
    assert (prefix / "share" / "frozen" / "cookie").read_bytes().startswith(b"MEI")


def test_no_terminal_never_waits(tmp_path: Path, demo_installer: Path) -> None:
    """Without -b and without a terminal on stdin the installer proceeds without asking."""
    prefix = tmp_path / "env"
    run = run_installer(demo_installer, "-p", prefix, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "[Y/n]" not in run.stdout


def test_terminal_confirmation_enter_accepts(tmp_path: Path, demo_installer: Path) -> None:
    prefix = tmp_path / "env"
    code, output = run_on_terminal(demo_installer, "-p", prefix, answers="\n")
    assert code == 0, output
    assert f"Install lsdemo 1.2.3 into {prefix}? [Y/n]" in output
    assert "lsdemo-hello" in output  # what it installs is shown first
    assert (prefix / "bin" / "lsdemo-hello").exists()


def test_terminal_confirmation_no_installs_nothing(tmp_path: Path, demo_installer: Path) -> None:
    prefix = tmp_path / "env"
    code, output = run_on_terminal(demo_installer, "-p", prefix, answers="n\n")
    assert code == 1, output
    assert "Nothing installed." in output
    assert not prefix.exists()


def run_stub_entry(
    installer: Path, *args: str | Path, env: dict[str, str], abort_at_exit: bool = False
) -> subprocess.CompletedProcess[str]:
    """The installer program from its sources (``stub.cli.entry``) reading ``installer``."""
    program = "import atexit, os, sys\n" + f"sys.argv = {[installer.name, *map(str, args)]!r}\n"
    if abort_at_exit:  # stands in for a crash while the interpreter shuts down
        program += "atexit.register(os.abort)\n"
    program += "from lockship.stub.cli import entry\nentry()\n"
    return subprocess.run(
        [sys.executable, "-c", program],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
        env={**os.environ, INSTALLER_ENV: str(installer), **env},
        timeout=120,
    )


def test_teardown_cannot_change_the_installers_exit_code(tmp_path: Path) -> None:
    """The installer ends its process itself once it has reported: a crash while the interpreter
    shuts down (rattler's runtime threads caused those in the builder) cannot turn a clear exit
    code into a signal."""
    not_an_installer = tmp_path / "broken.sh"
    not_an_installer.write_bytes(b"#!/bin/sh\nexit 0\n")
    run = run_stub_entry(not_an_installer, "-b", "-p", tmp_path / "env", env={}, abort_at_exit=True)
    assert run.returncode == 1, run.stderr
    assert "not a complete lockship installer" in run.stderr
    assert not (tmp_path / "env").exists()


def test_error_log_goes_where_the_relaunching_parent_asks(tmp_path: Path) -> None:
    """A relaunched Windows installer runs with TEMP in a folder its parent then removes; the
    parent passes its log folder so the log named in the error line still exists."""
    not_an_installer = tmp_path / "broken.exe"
    not_an_installer.write_bytes(b"MZ not an installer")
    logs = tmp_path / "logs"
    logs.mkdir()
    run = run_stub_entry(
        not_an_installer, "-b", "-p", tmp_path / "env", env={LOG_DIR_ENV: str(logs)}
    )
    assert run.returncode == 1, run.stderr
    (log,) = logs.iterdir()
    assert f"(details: {log})" in run.stderr
    assert "not a complete lockship installer" in log.read_text()


def test_terminal_with_bf_asks_nothing(tmp_path: Path, demo_installer: Path) -> None:
    """``-bf`` is ``-b -f`` (argparse's grouped flags): no question, even on a terminal."""
    prefix = tmp_path / "env"
    prefix.mkdir()
    (prefix / "keep.txt").write_text("mine")
    code, output = run_on_terminal(demo_installer, "-bf", "-p", prefix, answers="n\n")
    assert code == 0, output
    assert "[Y/n]" not in output and "Press Enter" not in output
    assert (prefix / "bin" / "lsdemo-hello").exists()


def test_the_builders_stub_folder_survives_the_installer(
    tmp_path: Path, demo_installer: Path, stub_program: Path
) -> None:
    """``LOCKSHIP_STUB_DIR`` is the builder's: an installer program run directly (as a Windows
    .exe is) with the user's value set leaves that folder alone."""
    stubs = tmp_path / "lockship-stubs"
    stubs.mkdir()
    (stubs / "lockship-stub-win-64.exe").write_bytes(b"MZ mine")
    env = {"LOCKSHIP_STUB_DIR": str(stubs)}
    run = run_stub_entry(demo_installer, "--version", env=env)
    assert (stubs / "lockship-stub-win-64.exe").read_bytes() == b"MZ mine"
    assert run.returncode == 0, run.stderr
    direct = subprocess.run(
        [stub_program, "--installer", demo_installer, "--version"],
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert direct.returncode == 0, direct.stderr
    assert (stubs / "lockship-stub-win-64.exe").read_bytes() == b"MZ mine"


def test_a_folder_the_header_did_not_make_survives(tmp_path: Path, demo_installer: Path) -> None:
    """Even under the header's private name, only a folder holding just the program's copy goes."""
    mine = tmp_path / "lockship-mine"
    mine.mkdir()
    (mine / "stub").write_text("mine")
    (mine / "notes.txt").write_text("mine")
    run = run_stub_entry(demo_installer, "--version", env={UNPACKED_DIR_ENV: str(mine)})
    assert run.returncode == 0, run.stderr
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt", "stub"]


@pytest.mark.parametrize("args", [("--version",), ("--bogus",)])
def test_the_header_folder_is_removed_at_exit(
    tmp_path: Path, demo_installer: Path, args: tuple[str, ...]
) -> None:
    temp = tmp_path / "temp"
    temp.mkdir()
    run = run_installer(demo_installer, *args, env={"TMPDIR": str(temp)})
    assert run.returncode in (0, 2), run.stderr
    assert list(temp.iterdir()) == []
