"""The installer manifest: what an installer holds, stored as the payload's metadata."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from stub.payload import PayloadError


@dataclass(frozen=True)
class PackageInfo:
    """One locked conda package carried by the installer."""

    entry: str  # payload entry name, "<subdir>/<file name>"
    file_name: str
    name: str
    version: str
    build: str
    subdir: str
    url: str  # where the lock says it came from; recorded in conda-meta after install
    channel: str
    sha256: str
    size: int
    record: dict[str, Any]  # the repodata record (rattler's JSON, without fn/url/channel)


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    platform: str
    environment: str
    lockship_version: str
    packages: tuple[PackageInfo, ...]
    #: the shortest binary prefix placeholder in any package; None when there are none
    max_prefix_length: int | None = None
    #: bytes of all package files once installed (from their paths.json)
    installed_size: int = 0
    #: characters in the longest relative path of any installed file
    max_path_length: int = 0
    #: virtual packages (e.g. "__glibc >=2.17") the packages depend on
    virtual_packages: tuple[str, ...] = ()
    options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        try:
            packages = tuple(PackageInfo(**p) for p in data["packages"])
            return cls(
                name=str(data["name"]),
                version=str(data["version"]),
                platform=str(data["platform"]),
                environment=str(data["environment"]),
                lockship_version=str(data["lockship_version"]),
                packages=packages,
                max_prefix_length=data.get("max_prefix_length"),
                installed_size=int(data.get("installed_size", 0)),
                max_path_length=int(data.get("max_path_length", 0)),
                virtual_packages=tuple(data.get("virtual_packages", ())),
                options=dict(data.get("options", {})),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PayloadError(
                f"the installer manifest is malformed ({e!r}); download the installer again"
            ) from e

    @property
    def total_size(self) -> int:
        return sum(p.size for p in self.packages)
