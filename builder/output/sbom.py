"""The CycloneDX SBOM written beside each installer: ``NAME-VERSION-PLATFORM.cdx.json``.

CycloneDX 1.6 JSON, written with cyclonedx-python-lib. The installer is the root component
(``metadata.component``, with the sha256 of the finished, possibly signed, file); every conda
package is a component with its ``pkg:conda`` purl, sha256 and license, every PyPI wheel one
with its ``pkg:pypi`` purl and sha256. The sha256s are those the installer's manifest and
payload index hold, so ``--info --json`` agrees with the SBOM.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from cyclonedx.model import HashAlgorithm, HashType, Property
from cyclonedx.model.bom import Bom, BomMetaData
from cyclonedx.model.component import Component, ComponentType
from cyclonedx.model.license import DisjunctiveLicense, License, LicenseExpression
from cyclonedx.model.tool import ToolRepository
from cyclonedx.output.json import JsonV1Dot6
from cyclonedx.spdx import fixup_id, is_expression
from lockship.builder.errors import BuildError
from lockship.stub import __version__
from lockship.stub.shared.boundary import atomic_path
from lockship.stub.shared.manifest import Manifest, PackageInfo
from packageurl import PackageURL
from packaging.utils import InvalidWheelFilename, parse_wheel_filename

#: what follows ``NAME-VERSION-PLATFORM`` in the SBOM's file name
SUFFIX = ".cdx.json"


@dataclass(frozen=True)
class StagedSbom:
    """An SBOM written under a temporary name, renamed to ``path`` with the installers."""

    path: Path
    sha256: str


def sbom_path(installer: Path) -> Path:
    """``NAME-VERSION-PLATFORM.cdx.json`` beside ``NAME-VERSION-PLATFORM.sh`` (or ``.exe``)."""
    return installer.with_name(installer.stem + SUFFIX)


def conda_purl(package: PackageInfo) -> PackageURL:
    """``pkg:conda/NAME@VERSION?build=…&channel=…&subdir=…&type=conda|tar.bz2``."""
    archive_type = "tar.bz2" if package.file_name.endswith(".tar.bz2") else "conda"
    return PackageURL(
        type="conda",
        name=package.name,
        version=package.version,
        qualifiers={
            "build": package.build,
            "channel": package.channel.rstrip("/"),
            "subdir": package.subdir,
            "type": archive_type,
        },
    )


def wheel_purl(entry: str) -> PackageURL:
    """``pkg:pypi/NAME@VERSION`` for the payload entry ``pypi/<wheel file name>``."""
    file_name = PurePosixPath(entry).name
    try:
        name, version, _, _ = parse_wheel_filename(file_name)
    except InvalidWheelFilename as e:
        raise BuildError(f"cannot name {file_name} in the SBOM: {e}") from e
    return PackageURL(type="pypi", name=name, version=str(version))


def license_of(package: PackageInfo) -> License | None:
    """The license in the package's repodata record: an SPDX id, an SPDX expression, or (for
    the free text many conda packages carry) a license by name."""
    value = package.record.get("license")
    if not isinstance(value, str) or not value.strip():
        return None
    value = value.strip()
    spdx_id = fixup_id(value)
    if spdx_id is not None:
        return DisjunctiveLicense(id=spdx_id)
    if is_expression(value):
        return LicenseExpression(value)
    return DisjunctiveLicense(name=value)


def _sha256(digest: str) -> HashType:
    return HashType(alg=HashAlgorithm.SHA_256, content=digest)


def conda_component(package: PackageInfo) -> Component:
    purl = conda_purl(package)
    license = license_of(package)
    return Component(
        type=ComponentType.LIBRARY,
        name=package.name,
        version=package.version,
        bom_ref=purl.to_string(),
        purl=purl,
        hashes=[_sha256(package.sha256)],
        licenses=[license] if license is not None else [],
    )


def wheel_component(entry: str, sha256: str) -> Component:
    purl = wheel_purl(entry)
    return Component(
        type=ComponentType.LIBRARY,
        name=purl.name,
        version=purl.version,
        bom_ref=purl.to_string(),
        purl=purl,
        hashes=[_sha256(sha256)],
    )


def installer_bom(
    manifest: Manifest,
    installer_name: str,
    installer_sha256: str,
    wheels: Mapping[str, str],
    *,
    kind: str = "offline installer",
) -> Bom:
    """The SBOM of one installer: ``wheels`` maps each payload entry of
    ``manifest.options.wheels`` to the wheel's sha256 (a delta installer's SBOM lists the whole
    environment, like its manifest, not only what it carries)."""
    missing = [entry for entry in manifest.options.wheels if entry not in wheels]
    if missing:
        raise BuildError(f"internal error: no sha256 for the wheels {', '.join(missing)}")
    root = Component(
        type=ComponentType.APPLICATION,
        name=manifest.name,
        version=manifest.version,
        bom_ref=installer_name,
        description=f"{kind} of {manifest.name} {manifest.version} for "
        f"{manifest.platform}, built by lockship {__version__}",
        hashes=[_sha256(installer_sha256)],
        # the oldest glibc the installer starts on (what its stub needs)
        properties=[Property(name="lockship:glibc", value=manifest.glibc)]
        if manifest.glibc
        else [],
    )
    components = [conda_component(p) for p in manifest.packages]
    components += [wheel_component(entry, wheels[entry]) for entry in manifest.options.wheels]
    tool = Component(type=ComponentType.APPLICATION, name="lockship", version=__version__)
    bom = Bom(
        components=components,
        metadata=BomMetaData(component=root, tools=ToolRepository(components=[tool])),
    )
    bom.register_dependency(root, components)
    return bom


def sbom_json(bom: Bom) -> str:
    """The BOM as CycloneDX 1.6 JSON."""
    return JsonV1Dot6(bom).output_as_string(indent=2) + "\n"


@contextmanager
def staged_sbom(
    installer: Path,
    manifest: Manifest,
    installer_sha256: str,
    wheels: Mapping[str, str],
    *,
    kind: str = "offline installer",
) -> Iterator[StagedSbom]:
    """Write the installer's SBOM to a temporary name beside it, renamed into place when the
    body succeeds (with the installers of the same build), removed when it fails."""
    path = sbom_path(installer)
    text = sbom_json(installer_bom(manifest, installer.name, installer_sha256, wheels, kind=kind))
    data = text.encode("utf-8")
    with ExitStack() as stack:
        # only writing the file is this function's failure: errors of the rest of the build
        # pass through the ``yield`` unchanged
        try:
            partial = stack.enter_context(atomic_path(path))
            partial.write_bytes(data)
        except OSError as e:
            raise BuildError(f"cannot write the SBOM {path}: {e.strerror or e}") from e
        yield StagedSbom(path, hashlib.sha256(data).hexdigest())
