"""``--check`` verifies every byte: each single flipped byte of an installer is caught, in a
shell installer, a Windows one, and a Windows one that was signed afterwards."""

from __future__ import annotations

import os
import struct
from pathlib import Path

import pytest
from lockship.builder.output.installer import write_installer
from lockship.stub.check import verify_installer
from lockship.stub.errors import InstallError
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.payload import PayloadError, read_payload

from tests.factories import write_stand_in_stub
from tests.runners import run_installer
from tests.test_payload import _pe_preamble, _sign
from tests.test_platforms import manifest_for, package

PE_OPTIONAL = 0x80 + 24
#: the two PE header fields Authenticode signing rewrites (checksum, certificate directory):
#: not lockship's to check; the signature covers them
SIGNATURE_FIELDS = {*range(PE_OPTIONAL + 64, PE_OPTIONAL + 68)} | {
    *range(PE_OPTIONAL + 112 + 32, PE_OPTIONAL + 112 + 40)
}


def small_installer(tmp_path: Path, platform: str) -> Path:
    info, archive = package(tmp_path, "tiny", platform, {"share/tiny.txt": "tiny"})
    if platform.startswith("win-"):
        stub = write_stand_in_stub(tmp_path / "stub.exe", bytes(_pe_preamble(512)))
        output = tmp_path / "tiny-1.0-win-64.exe"
    else:
        stub = write_stand_in_stub(tmp_path / "stub", os.urandom(1500))
        output = tmp_path / "tiny-1.0-linux-64.sh"
    write_installer(output, stub, manifest_for(platform, [info]), [(info.entry, archive)])
    return output


def check(path: Path) -> None:
    payload = read_payload(path)
    verify_installer(payload, Manifest.from_dict(payload.metadata))


def every_flip_is_caught(installer: Path, *, upto: int, skip: set[int]) -> int:
    data = installer.read_bytes()
    damaged = installer.with_name("damaged")
    caught = 0
    for at in range(upto):
        if at in skip:
            continue
        flipped = bytearray(data)
        flipped[at] ^= 0x01
        damaged.write_bytes(bytes(flipped))
        with pytest.raises((InstallError, PayloadError)):
            check(damaged)
        caught += 1
    return caught


@pytest.mark.parametrize("platform", ["linux-64", "win-64"])
def test_a_flipped_byte_anywhere_is_caught(tmp_path: Path, platform: str) -> None:
    installer = small_installer(tmp_path, platform)
    check(installer)
    regions = Manifest.from_dict(read_payload(installer).metadata).regions
    names = [r.name for r in regions]
    expected = ["the installer's program"]
    if platform == "linux-64":
        expected.insert(0, "the installer's header")
    assert names == expected
    size = installer.stat().st_size
    skip = SIGNATURE_FIELDS if platform == "win-64" else set()
    assert every_flip_is_caught(installer, upto=size, skip=skip) == size - len(skip)


def test_a_signed_exe_passes_and_every_signed_byte_is_still_checked(tmp_path: Path) -> None:
    installer = small_installer(tmp_path, "win-64")
    unsigned_size = installer.stat().st_size
    _sign(installer, b"\x30\x82certificate" * 30)
    data = bytearray(installer.read_bytes())
    struct.pack_into("<I", data, PE_OPTIONAL + 64, 0x1234ABCD)  # signing sets the checksum
    installer.write_bytes(bytes(data))
    check(installer)
    caught = every_flip_is_caught(installer, upto=unsigned_size, skip=SIGNATURE_FIELDS)
    assert caught == unsigned_size - len(SIGNATURE_FIELDS)


def test_the_damaged_region_is_named_with_its_bytes(tmp_path: Path) -> None:
    installer = small_installer(tmp_path, "linux-64")
    payload = read_payload(installer)
    (header, program) = Manifest.from_dict(payload.metadata).regions
    data = bytearray(installer.read_bytes())
    data[program.offset + program.size * 4 // 5] ^= 0x40
    installer.write_bytes(bytes(data))
    with pytest.raises(InstallError) as raised:
        check(installer)
    last = program.offset + program.size - 1
    assert str(raised.value) == (
        f"the installer's program (bytes {program.offset:,} to {last:,}) is damaged; "
        "download the installer again"
    )
    assert header.offset == 0 and header.size == program.offset


@pytest.mark.e2e
@pytest.mark.parametrize("region", ["header", "program"])
def test_the_real_installer_names_its_damaged_region(
    tmp_path: Path, demo_installer: Path, region: str
) -> None:
    """As users run it: ``sh installer.sh --check`` on a copy with one byte flipped in a
    comment line of the header, or in the last byte of the program (its pack's trailer, which
    unpacking does not read)."""
    payload = read_payload(demo_installer)
    header, program = Manifest.from_dict(payload.metadata).regions
    data = bytearray(demo_installer.read_bytes())
    if region == "header":
        at = data.index(b"# Usage: ") + 3
        damaged_region = header
    else:
        at = program.offset + program.size - 1
        damaged_region = program
    data[at] ^= 0x01
    damaged = tmp_path / demo_installer.name
    damaged.write_bytes(bytes(data))
    run = run_installer(damaged, "--check")
    assert run.returncode == 1, run.stdout + run.stderr
    last = damaged_region.offset + damaged_region.size - 1
    (line,) = run.error_lines
    assert line.startswith(
        f"ERROR: {damaged_region.name} (bytes {damaged_region.offset:,} to {last:,}) is "
        "damaged; download the installer again (details: "
    ), line


@pytest.mark.e2e
@pytest.mark.parametrize("where", [0.1, 0.5, 0.8])
def test_damaged_program_frames_are_refused_before_anything_runs(
    tmp_path: Path, demo_installer: Path, where: float
) -> None:
    """A flipped byte inside the program's zstd frames: the header's unpacker finds it (every
    frame has a checksum) and the installer stops with one line, touching no prefix."""
    payload = read_payload(demo_installer)
    _, program = Manifest.from_dict(payload.metadata).regions
    data = bytearray(demo_installer.read_bytes())
    data[program.offset + int(program.size * where)] ^= 0x01
    damaged = tmp_path / demo_installer.name
    damaged.write_bytes(bytes(data))
    temp = tmp_path / "temp"
    temp.mkdir()
    run = run_installer(damaged, "-b", "-p", tmp_path / "env", env={"TMPDIR": str(temp)})
    assert run.returncode == 1
    (line,) = run.error_lines
    assert line.startswith(
        f"ERROR: the installer file {damaged} is damaged (the program is damaged: a zstd frame "
    ), line
    assert line.endswith("); download it again"), line
    assert not (tmp_path / "env").exists()
    assert list(temp.iterdir()) == []  # the header removed its folder
