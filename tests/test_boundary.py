"""The door between the wings, ``stub/shared/``, and what crosses it: ``boundary.py`` (the ERROR
line, the log, atomic writes, SHA256SUMS) and the reporters of ``progress.py``."""

from __future__ import annotations

import errno
import io
import json
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from lockship.stub.errors import InstallError, UsageError
from lockship.stub.shared.boundary import (
    atomic_write,
    file_sha256,
    format_checksums,
    parse_checksums,
    report_error,
    write_log,
    write_text_atomically,
)
from lockship.stub.shared.payload import PayloadError
from lockship.stub.shared.progress import LineReporter, TqdmReporter

REPO = Path(__file__).resolve().parents[1]


def modules_in(folder: str) -> list[str]:
    """The import names of every module of ``folder`` (``builder`` or ``stub``), subpackages
    included."""
    found = []
    for path in (REPO / folder).rglob("*.py"):
        parts = path.relative_to(REPO).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found.append("lockship." + ".".join(parts))
    return sorted(found)


STUB_MODULES = [m for m in modules_in("stub") if m != "lockship.stub.__main__"]
BUILDER_MODULES = modules_in("builder")
#: what of the installer the builder may load: the package (its version) and the door
DOOR_PACKAGE = "lockship.stub.shared"


def through_the_door(module: str) -> bool:
    return module in ("lockship.stub", DOOR_PACKAGE) or module.startswith(f"{DOOR_PACKAGE}.")


def loaded_after_importing(modules: list[str], prefixes: tuple[str, ...]) -> dict[str, list[str]]:
    """module -> the modules starting with ``prefixes`` loaded once it was imported (cumulative:
    one fresh interpreter imports ``modules`` in order)."""
    program = (
        "import importlib, json, sys\n"
        "seen = {}\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"    seen[name] = sorted(m for m in sys.modules if m.startswith({prefixes!r}))\n"
        "print(json.dumps(seen))\n"
    )
    run = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert run.returncode == 0, run.stderr
    loaded: dict[str, list[str]] = json.loads(run.stdout)
    return loaded


# --- the door -----------------------------------------------------------------------------


def test_the_installer_loads_nothing_of_the_builder() -> None:
    assert "lockship.stub.cli" in STUB_MODULES
    foreign = ("lockship.builder", "jinja2", "yaml", "tests")
    modules = ["lockship.stub.cli", *(m for m in STUB_MODULES if m != "lockship.stub.cli")]
    for module, loaded in loaded_after_importing(modules, foreign).items():
        assert loaded == [], f"importing {module} loaded {loaded}"


def test_the_installer_loads_asyncio_only_to_link() -> None:
    """asyncio takes ~25 ms to import and only runs rattler's coroutine: loaded with the
    installer's modules, it would delay the first line (and --info, --check, early errors)."""
    for module, loaded in loaded_after_importing(STUB_MODULES, ("asyncio",)).items():
        assert loaded == [], f"importing {module} loaded {loaded}"


#: the image builder makes the environment with the installer's own linking, wheel and
#: activation code (docs/images.md): the one part of the builder that goes past the door
PAST_THE_DOOR = ("lockship.builder.image.environment", "lockship.builder.image.assembly")


@pytest.mark.parametrize("module", [m for m in BUILDER_MODULES if m not in PAST_THE_DOOR])
def test_the_builder_loads_only_the_door_of_the_installer(module: str) -> None:
    (loaded,) = loaded_after_importing([module], ("lockship.stub",)).values()
    beyond = [m for m in loaded if not through_the_door(m)]
    assert beyond == [], f"importing {module} loaded {beyond}"
    if module == "lockship.builder.cli":
        door = {m for m in STUB_MODULES if through_the_door(m)}
        assert set(loaded) == door


@pytest.mark.parametrize("module", PAST_THE_DOOR)
def test_the_image_builder_goes_past_the_door_for_the_install_pieces_only(module: str) -> None:
    """Linking, wheels, activation and the prefix's records; never the installer's command
    line, its payload reading or its preflight."""
    (loaded,) = loaded_after_importing([module], ("lockship.stub",)).values()
    beyond = {m for m in loaded if not through_the_door(m)}
    assert {"lockship.stub.linking", "lockship.stub.activation"} <= beyond
    entry_side = {"lockship.stub.cli", "lockship.stub.launch", "lockship.stub.preflight"}
    assert not beyond & entry_side, f"importing {module} loaded {beyond & entry_side}"


# --- the ERROR line, the log and the exit code ---------------------------------------------


@pytest.fixture
def logs(tmp_path: Path) -> Path:
    folder = tmp_path / "logs"
    folder.mkdir()
    return folder


def report(error: BaseException, logs: Path) -> int:
    return report_error(
        error,
        program="demo.sh",
        header="test 1.0",
        known=(InstallError, PayloadError),
        log_dir=str(logs),
    )


def the_log(logs: Path) -> Path:
    (log,) = logs.iterdir()
    return log


def test_a_known_error_is_its_message_a_log_and_its_exit_code(
    logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    try:
        raise InstallError("the prefix is busy; try again")
    except InstallError as e:
        assert report(e, logs) == 1
    log = the_log(logs)
    assert capsys.readouterr().err == f"ERROR: the prefix is busy; try again (details: {log})\n"
    assert log.name.startswith("lockship-demo.sh-") and log.suffix == ".log"
    text = log.read_text()
    assert text.startswith("test 1.0, argv=")
    assert json.loads(text.splitlines()[1]) == {
        "error": "the prefix is busy; try again",
        "type": "InstallError",
    }
    assert "Traceback" in text and "raise InstallError" in text
    assert log.stat().st_mode & 0o777 == 0o600


def test_a_usage_error_exits_2_without_a_log(
    logs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert report(UsageError("unrecognized arguments: --bogus (see --help)"), logs) == 2
    assert capsys.readouterr().err == "ERROR: unrecognized arguments: --bogus (see --help)\n"
    assert list(logs.iterdir()) == []


def test_an_error_with_its_own_exit_code(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from lockship.stub.errors import Interrupted

    assert report(Interrupted("SIGINT", 130), logs) == 130
    assert capsys.readouterr().err == f"ERROR: interrupted by SIGINT (details: {the_log(logs)})\n"


def test_a_payload_error_is_known(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report(PayloadError("not a complete lockship installer"), logs) == 1
    assert capsys.readouterr().err.startswith("ERROR: not a complete lockship installer (details: ")


def test_an_os_error_names_its_file(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    error = PermissionError(errno.EACCES, "Permission denied", "/opt/env/bin")
    assert report(error, logs) == 1
    assert capsys.readouterr().err == (
        "ERROR: Permission denied (/opt/env/bin); check the path, its permissions and free space "
        f"(details: {the_log(logs)})\n"
    )


def test_anything_else_is_a_bug(logs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert report(KeyError("name"), logs) == 1
    assert capsys.readouterr().err == (
        f"ERROR: unexpected failure: KeyError('name') (details: {the_log(logs)})\n"
    )


def test_no_log_folder_still_gives_the_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "missing"
    code = report_error(
        InstallError("x"), program="p", header="h", known=(InstallError,), log_dir=str(missing)
    )
    assert code == 1
    assert capsys.readouterr().err == "ERROR: x\n"
    # an OSError and a bug alike: the line, with no "(details: None)"
    for error, line in [
        (PermissionError(errno.EACCES, "Permission denied", "/opt/env/bin"),
         "ERROR: Permission denied (/opt/env/bin); check the path, its permissions and free "
         "space\n"),
        (KeyError("name"), "ERROR: unexpected failure: KeyError('name')\n"),
    ]:  # fmt: skip
        code = report_error(error, program="p", header="h", known=(), log_dir=str(missing))
        assert (code, capsys.readouterr().err) == (1, line)


@pytest.fixture
def predictable_names(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """tempfile's random parts, in order: ``planted`` first, then ``fresh``."""
    names = ["planted", "fresh"]
    monkeypatch.setattr(tempfile, "_get_candidate_names", lambda: iter(names))
    monkeypatch.setattr("lockship.stub.shared.boundary.time.strftime", lambda _: "20250101-000000")
    yield names


@pytest.mark.skipif(sys.platform == "win32", reason="symlinks need privileges on Windows")
def test_the_log_never_follows_a_planted_symlink(
    tmp_path: Path, logs: Path, predictable_names: list[str]
) -> None:
    target = tmp_path / "precious.txt"
    target.write_text("mine")
    planted = logs / "lockship-demo.sh-20250101-000000-planted.log"
    planted.symlink_to(target)
    log = write_log("demo.sh", InstallError("x"), header="h", folder=str(logs))
    assert log == logs / "lockship-demo.sh-20250101-000000-fresh.log"
    assert target.read_text() == "mine"
    assert planted.is_symlink() and "Traceback" not in target.read_text()


# --- files ----------------------------------------------------------------------------------


def test_atomic_write_replaces_the_file_whole(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with atomic_write(path, mode=0o600) as f:
        f.write(b"new")
        assert path.read_bytes() == b"old"  # readers see the old file until the rename
    assert path.read_bytes() == b"new"
    assert path.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path: Path) -> None:
    path = tmp_path / "out.bin"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError), atomic_write(path, durable=True) as f:
        f.write(b"half")
        raise RuntimeError("stop")
    assert path.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]


def test_write_text_atomically_writes_utf8_with_newlines(tmp_path: Path) -> None:
    path = tmp_path / "a.txt"
    write_text_atomically(path, "ünï\nzwei\n")
    assert path.read_bytes() == "ünï\nzwei\n".encode()
    assert path.stat().st_mode & 0o777 == 0o644 or sys.platform == "win32"


def test_file_sha256(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"abc")
    assert file_sha256(path) == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_checksums_round_trip_sorted_and_checkable() -> None:
    sums = {"b.sh": "b" * 64, "a.exe": "A" * 64}
    text = format_checksums(sums)
    assert text == f"{'A' * 64}  a.exe\n{'b' * 64}  b.sh\n"
    assert parse_checksums(text) == {"a.exe": "a" * 64, "b.sh": "b" * 64}


def test_parse_checksums_reads_binary_marks_and_skips_junk() -> None:
    text = f"{'c' * 64}  *c.sh\nnot a line\n{'d' * 63}  short.sh\n{'e' * 64}  \n\n"
    assert parse_checksums(text) == {"c.sh": "c" * 64}


# --- reporters ------------------------------------------------------------------------------


def test_line_reporter_prints_every_quarter() -> None:
    stream = io.StringIO()
    reporter = LineReporter(stream)
    reporter.start("Linking", 8, unit="files")
    for _ in range(8):
        reporter.advance()
    reporter.finish()
    assert stream.getvalue().splitlines() == [
        "Linking (8 files)...",
        "Linking: 25%",
        "Linking: 50%",
        "Linking: 75%",
        "Linking: done",
    ]


def test_line_reporter_counts_bytes_in_mb_and_jumps_quarters() -> None:
    stream = io.StringIO()
    reporter = LineReporter(stream)
    reporter.start("Copying", 4_000_000, unit="B")
    reporter.advance(3_500_000)  # three quarters at once
    reporter.message("a note")
    reporter.advance(500_000)
    reporter.finish()
    reporter.start("Nothing", 0)
    reporter.advance(5)
    reporter.finish()
    assert stream.getvalue().splitlines() == [
        "Copying (4.0 MB)...",
        "Copying: 25%",
        "Copying: 50%",
        "Copying: 75%",
        "a note",
        "Copying: done",
        "Nothing (0 it)...",
        "Nothing: done",
    ]


def test_tqdm_reporter_draws_a_bar_and_writes_messages() -> None:
    stream = io.StringIO()
    reporter = TqdmReporter(stream)
    reporter.advance()  # before a stage: nothing to update
    reporter.start("Linking", 2)
    reporter.advance(2)
    reporter.message("a note")
    reporter.finish()
    reporter.finish()
    output = stream.getvalue()
    assert "Linking" in output and "2/2" in output and "a note\n" in output


def test_the_builder_imports_without_posix_only_modules() -> None:
    """The win-64 stub is frozen on Windows by ``lockship`` itself (scripts/freeze_stub.py):
    importing the command line must not need ``fcntl``, which Windows lacks."""
    code = (
        "import sys\n"
        "class NoFcntl:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'fcntl':\n"
        "            raise ModuleNotFoundError(\"No module named 'fcntl'\")\n"
        "sys.modules.pop('fcntl', None)\n"
        "sys.meta_path.insert(0, NoFcntl())\n"
        "import lockship.builder.cli\n"
        "print('fcntl' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=False, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "False"
