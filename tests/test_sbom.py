"""The CycloneDX SBOM beside each installer: valid 1.6, every package with its purl, sha256 and
license, the installer as the root component, and the same sha256s as ``--info --json``."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from cyclonedx.schema import SchemaVersion
from cyclonedx.validation.json import JsonStrictValidator
from lockship.builder.errors import BuildError
from lockship.builder.output.sbom import installer_bom, sbom_json, sbom_path, wheel_purl
from lockship.stub.shared.boundary import parse_checksums
from lockship.stub.shared.manifest import Manifest, PackageInfo
from lockship.stub.shared.payload import read_payload
from lockship.stub.summary import json_summary

from tests.conftest import DEMO_PLATFORM
from tests.factories import (
    ChannelServer,
    add_pypi_packages,
    channel_records,
    index_channel,
    write_conda_package,
    write_pixi_lock,
    write_stand_in_stub,
    write_wheel,
)
from tests.runners import run_installer, run_lockship

PLATFORM = DEMO_PLATFORM


def validation_errors(text: str) -> list[str]:
    errors = JsonStrictValidator(SchemaVersion.V1_6).validate_str(text, all_errors=True)
    return [str(e) for e in errors or ()]


def sha256_of(component: dict[str, Any]) -> str:
    (digest,) = component["hashes"]
    assert digest["alg"] == "SHA-256"
    return str(digest["content"])


def conda_purl(package: dict[str, Any], channel: str, archive_type: str) -> str:
    """The purl the SBOM must give a package of ``--info --json``."""
    return (
        f"pkg:conda/{package['name']}@{package['version']}?build={package['build']}"
        f"&channel={channel}&subdir={package['subdir']}&type={archive_type}"
    )


@pytest.fixture
def built(tmp_path: Path, demo_channel: Path) -> Path:
    """An installer (with a stand-in stub) of the demo channel plus a .tar.bz2 package with an
    SPDX expression for license, one with free text, and a PyPI wheel."""
    channel = tmp_path / "channel"
    shutil.copytree(demo_channel, channel)
    write_conda_package(
        channel,
        "old-format",
        "2.0",
        fmt=".tar.bz2",
        files={"share/old.txt": "old"},
        extra_index={"license": "MIT OR Apache-2.0"},
    )
    write_conda_package(
        channel,
        "in-house",
        "0.3",
        files={"share/in-house.txt": "mine"},
        extra_index={"license": "Proprietary, see LICENSE.txt"},
    )
    index_channel(channel)
    workspace = tmp_path / "ws"
    wheel = write_wheel(workspace / "dist", "Hello_Wheel", "1.0", modules={"hello.py": "X = 1\n"})
    (workspace / "pixi.toml").write_text('[workspace]\nname = "lsdemo"\nversion = "1.2.3"\n')
    stub = tmp_path / "stand-in-stub"
    write_stand_in_stub(stub)
    with ChannelServer(channel) as server:
        records = channel_records(channel, server.url, PLATFORM)
        lock = write_pixi_lock(workspace / "pixi.lock", {PLATFORM: records}, channel_url=server.url)
        sha = hashlib.sha256(wheel.read_bytes()).hexdigest()
        add_pypi_packages(lock, PLATFORM, [("hello-wheel", "1.0", f"./dist/{wheel.name}", sha)])
        run = run_lockship(
            "build", lock, "--stub", stub, "--cache-dir", tmp_path / "cache", "-o", tmp_path / "out"
        )
    assert run.returncode == 0, run.stderr
    return Path(run.stdout.strip().splitlines()[-1])


def test_the_sbom_is_valid_cyclonedx_1_6_beside_the_installer(built: Path) -> None:
    sbom = built.parent / f"lsdemo-1.2.3-{PLATFORM}.cdx.json"
    assert sbom_path(built) == sbom
    text = sbom.read_text(encoding="utf-8")
    assert validation_errors(text) == []
    bom = json.loads(text)
    assert (bom["bomFormat"], bom["specVersion"]) == ("CycloneDX", "1.6")
    assert bom["metadata"]["tools"]["components"][0]["name"] == "lockship"


def test_the_root_component_is_the_installer_file(built: Path) -> None:
    root = json.loads(sbom_path(built).read_text())["metadata"]["component"]
    assert (root["type"], root["name"], root["version"]) == ("application", "lsdemo", "1.2.3")
    assert root["bom-ref"] == built.name
    assert sha256_of(root) == hashlib.sha256(built.read_bytes()).hexdigest()
    # the root depends on every package: the dependency graph is complete
    bom = json.loads(sbom_path(built).read_text())
    (root_dependencies,) = [d for d in bom["dependencies"] if d["ref"] == built.name]
    assert sorted(root_dependencies["dependsOn"]) == sorted(c["bom-ref"] for c in bom["components"])


def test_every_package_and_wheel_agrees_with_info_json(built: Path) -> None:
    payload = read_payload(built)
    info = json_summary(Manifest.from_dict(payload.metadata))
    components = {c["purl"]: c for c in json.loads(sbom_path(built).read_text())["components"]}
    expected = {}
    for package in info["packages"]:
        channel = package["url"].rsplit("/", 2)[0]
        archive_type = "tar.bz2" if package["url"].endswith(".tar.bz2") else "conda"
        expected[conda_purl(package, channel, archive_type)] = package["sha256"]
    for entry in info["pypi_wheels"]:
        expected[str(wheel_purl(entry))] = payload.entry(entry).sha256
    assert info["pypi_wheels"] == ["pypi/Hello_Wheel-1.0-py3-none-any.whl"]
    assert "pkg:pypi/hello-wheel@1.0" in expected
    assert any(purl.endswith("&type=tar.bz2") for purl in expected)
    assert {purl: sha256_of(c) for purl, c in components.items()} == expected
    assert all(c["type"] == "library" and c["bom-ref"] == c["purl"] for c in components.values())


def test_licenses_come_from_the_package_metadata(built: Path) -> None:
    components = json.loads(sbom_path(built).read_text())["components"]
    licenses = {c["name"]: c.get("licenses") for c in components}
    assert licenses["old-format"] == [{"expression": "MIT OR Apache-2.0"}]
    assert licenses["in-house"] == [{"license": {"name": "Proprietary, see LICENSE.txt"}}]
    assert licenses["hello-wheel"] is None
    spdx = [
        name for name, value in licenses.items() if value == [{"license": {"id": "BSD-3-Clause"}}]
    ]
    assert len(spdx) == len(components) - 3  # every other package, as the factory writes them


def test_sha256sums_lists_the_sbom(built: Path) -> None:
    sums = parse_checksums((built.parent / "SHA256SUMS").read_text())
    sbom = sbom_path(built)
    assert sums == {
        built.name: hashlib.sha256(built.read_bytes()).hexdigest(),
        sbom.name: hashlib.sha256(sbom.read_bytes()).hexdigest(),
    }
    assert not [p for p in built.parent.iterdir() if p.name.endswith(".part")]


def package(**fields: Any) -> PackageInfo:
    values: dict[str, Any] = {
        "entry": "linux-64/a-1-0.conda",
        "file_name": "a-1-0.conda",
        "name": "a",
        "version": "1",
        "build": "0",
        "subdir": "linux-64",
        "url": "https://conda.example.invalid/forge/linux-64/a-1-0.conda",
        "channel": "https://conda.example.invalid/forge/",
        "sha256": "ab" * 32,
        "size": 1,
        "record": {},
    }
    return PackageInfo(**(values | fields))


@pytest.mark.parametrize(
    ("license", "expected"),
    [
        ("BSD-3-Clause", {"license": {"id": "BSD-3-Clause"}}),
        ("bsd-3-clause", {"license": {"id": "BSD-3-Clause"}}),
        ("GPL-2.0-or-later WITH Classpath-exception-2.0", {"expression": None}),
        ("BSD 3-clause", {"license": {"name": "BSD 3-clause"}}),
        ("", None),
        (None, None),
    ],
)
def test_each_kind_of_license(license: str | None, expected: dict[str, Any] | None) -> None:
    manifest = Manifest(
        "x", "1", "linux-64", "default", "0", (package(record={"license": license}),)
    )
    bom = json.loads(sbom_json(installer_bom(manifest, "x-1-linux-64.sh", "cd" * 32, {})))
    (component,) = bom["components"]
    if expected is not None and "expression" in expected:
        expected = {"expression": license}
    assert component.get("licenses", [None])[0] == expected
    assert component["purl"] == (
        "pkg:conda/a@1?build=0&channel=https://conda.example.invalid/forge&subdir=linux-64"
        "&type=conda"
    )


def test_a_wheel_without_a_sha256_is_an_internal_error() -> None:
    manifest = Manifest("x", "1", "linux-64", "default", "0", ())
    manifest = Manifest.from_dict(
        manifest.to_dict() | {"options": {"wheels": ["pypi/a-1-py3-none-any.whl"]}}
    )
    with pytest.raises(BuildError, match=r"^internal error: no sha256 for the wheels pypi/a-1"):
        installer_bom(manifest, "x-1-linux-64.sh", "cd" * 32, {})


@pytest.mark.e2e
def test_the_real_installers_info_json_agrees(demo_installer: Path) -> None:
    run = run_installer(demo_installer, "--info", "--json")
    assert run.returncode == 0, run.stderr
    info = json.loads(run.stdout)
    bom = json.loads(sbom_path(demo_installer).read_text())
    assert validation_errors(json.dumps(bom)) == []
    assert (
        sha256_of(bom["metadata"]["component"])
        == hashlib.sha256(demo_installer.read_bytes()).hexdigest()
    )
    by_name = {c["name"]: c for c in bom["components"]}
    assert sorted(by_name) == sorted(p["name"] for p in info["packages"])
    for p in info["packages"]:
        component = by_name[p["name"]]
        assert sha256_of(component) == p["sha256"]
        assert component["version"] == p["version"]
        assert f"build={p['build']}&" in component["purl"]
        assert f"subdir={p['subdir']}&" in component["purl"]


def test_an_sbom_that_cannot_be_put_in_place_leaves_no_installer(
    tmp_path: Path, demo_lock: Path
) -> None:
    """All or nothing: the installer and its SBOM go into place together."""
    stub = tmp_path / "stand-in-stub"
    write_stand_in_stub(stub)
    out = tmp_path / "out"
    (out / f"lsdemo-1.2.3-{PLATFORM}.cdx.json").mkdir(parents=True)  # in the way of the rename
    (out / "SHA256SUMS").write_text(f"{'0' * 64}  kept-0.1-{PLATFORM}.sh\n")
    run = run_lockship("build", demo_lock, "--stub", stub, "--cache-dir", tmp_path / "c", "-o", out)
    assert run.returncode == 1, run.stderr
    (error,) = [line for line in run.stderr.splitlines() if line.startswith("ERROR:")]
    # the rename names the temporary file: .lsdemo-1.2.3-linux-64.cdx.json.XXXX.part
    assert error.startswith("ERROR: Is a directory (") and ".cdx.json." in error, error
    assert sorted(p.name for p in out.iterdir()) == [
        "SHA256SUMS",
        f"lsdemo-1.2.3-{PLATFORM}.cdx.json",
    ]
    assert (out / "SHA256SUMS").read_text() == f"{'0' * 64}  kept-0.1-{PLATFORM}.sh\n"
