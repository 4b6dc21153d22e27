"""The installer manifest: what an installer holds, stored as the payload's metadata; and
what an update keeps of an earlier install (:func:`kept_on_update` for conda packages,
:func:`plan_wheels` for wheels), the rules the installer follows and a delta installer relies on.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import PurePosixPath
from typing import TYPE_CHECKING, Any

from lockship.stub.shared.payload import PayloadError

if TYPE_CHECKING:  # rattler's records are read duck-typed: importing rattler takes 100 ms
    from rattler import PackageRecord


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
class Region:
    """Bytes of the installer before its payload (the shell header, the program), hashed when
    the installer was built, so ``--check`` verifies every byte of the file."""

    #: what the user is told is damaged: "the installer's header", "the installer's program"
    name: str
    offset: int
    size: int
    sha256: str
    #: ``(offset, length)`` ranges, relative to the file, hashed as zeros: the fields of a
    #: Windows executable's header that Authenticode signing rewrites
    zeroed: tuple[tuple[int, int], ...] = ()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Region:
        return cls(
            name=str(data["name"]),
            offset=int(data["offset"]),
            size=int(data["size"]),
            sha256=str(data["sha256"]),
            zeroed=tuple((int(a), int(b)) for a, b in data.get("zeroed", ())),
        )


@dataclass(frozen=True)
class InstallerOptions:
    """How the installer installs, as chosen at build time (payload entries are named)."""

    #: run packages' post-link scripts (``lockship build --no-link-scripts`` turns it off)
    link_scripts: bool = True
    #: compile .pyc files after installing
    pyc: bool = True
    #: the packages that carry a link script: post-link, pre-unlink (shown by ``--info``)
    link_script_packages: tuple[str, ...] = ()
    #: payload entries of the PyPI wheels, installed in this order
    wheels: tuple[str, ...] = ()
    #: those of ``wheels`` the builder built from a locked sdist, local project or git URL
    built_wheels: tuple[str, ...] = ()
    #: payload entry of a license the user must accept
    license: str | None = None
    #: payload entry of the post-install script
    post_install: str | None = None
    #: payload entry of the pixi.lock lockship solved (for ``--spec``/environment.yml inputs)
    solved_lock: str | None = None
    #: the default ``-p`` chosen at build time, ``~`` and ``$VAR`` (``%VAR%`` on Windows) still
    #: to be expanded on the installing machine; None: ``~/NAME`` (``%LOCALAPPDATA%\NAME``)
    default_prefix: str | None = None

    @classmethod
    def from_dict(cls, data: object) -> InstallerOptions:
        """Read the manifest's ``options``; unknown keys (a newer builder's) are ignored."""
        if not isinstance(data, dict):
            raise TypeError("options is not an object")
        values: dict[str, Any] = {}
        for f in fields(cls):
            if f.name not in data:
                continue
            value = data[f.name]
            if f.type == "bool" and not isinstance(value, bool):
                raise TypeError(f"option {f.name} is not true or false")
            if f.type == "tuple[str, ...]":
                if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                    raise TypeError(f"option {f.name} is not a list of strings")
                value = tuple(value)
            if f.type == "str | None" and not (value is None or isinstance(value, str)):
                raise TypeError(f"option {f.name} is not a string")
            values[f.name] = value
        return cls(**values)


@dataclass(frozen=True)
class BaseFile:
    """A conda archive or wheel of the environment a delta installer updates."""

    name: str
    file_name: str
    #: None when the old lock did not record it (then only the file name is compared)
    sha256: str | None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> BaseFile:
        sha256 = data.get("sha256")
        return cls(
            str(data["name"]), str(data["file_name"]), None if sha256 is None else str(sha256)
        )


@dataclass(frozen=True)
class DeltaBase:
    """What a delta installer (``lockship build --delta-from``) updates: the environment that
    must be in the prefix, and which of the new version's entries the installer carries.

    The manifest's ``packages`` and ``options.wheels`` stay the whole new version; the ones
    not carried are unchanged since the base (same file, same sha256), so the update leaves
    them where they are and never needs their archives.
    """

    name: str
    version: str
    packages: tuple[BaseFile, ...]
    wheels: tuple[BaseFile, ...]
    #: payload entries (packages and wheels) this installer carries
    carried: tuple[str, ...]

    def carries(self, entry: str) -> bool:
        return entry in self.carried

    def wheel_sha256(self, file_name: str) -> str | None:
        """The base's sha256 of the wheel ``file_name`` (what a wheel not carried has)."""
        return next((w.sha256 for w in self.wheels if w.file_name == file_name), None)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DeltaBase:
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            packages=tuple(BaseFile.from_dict(p) for p in data["packages"]),
            wheels=tuple(BaseFile.from_dict(w) for w in data["wheels"]),
            carried=tuple(str(e) for e in data["carried"]),
        )


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
    options: InstallerOptions = field(default_factory=InstallerOptions)
    #: every byte before the payload, hashed (empty in installers of older builders)
    regions: tuple[Region, ...] = ()
    #: set in a delta installer: the environment it updates (absent in full installers)
    delta: DeltaBase | None = None

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
                options=InstallerOptions.from_dict(data.get("options", {})),
                regions=tuple(Region.from_dict(r) for r in data.get("regions", ())),
                delta=DeltaBase.from_dict(data["delta"]) if data.get("delta") else None,
            )
        except (KeyError, TypeError, ValueError) as e:
            raise PayloadError(
                f"the installer manifest is malformed ({e!r}); download the installer again"
            ) from e

    @property
    def total_size(self) -> int:
        return sum(p.size for p in self.packages)

    @property
    def carried_packages(self) -> tuple[PackageInfo, ...]:
        """The packages whose archives the payload holds: all, except in a delta installer."""
        if self.delta is None:
            return self.packages
        delta = self.delta
        return tuple(p for p in self.packages if delta.carries(p.entry))

    @property
    def carried_size(self) -> int:
        return sum(p.size for p in self.carried_packages)


# --- what an update keeps -------------------------------------------------------------------


@dataclass(frozen=True)
class LinkedPackage:
    """A conda package in a prefix (or in the environment a delta installer updates), as
    rattler's update compares it with the package locked now."""

    name: str
    version: str
    sha256: str | None
    md5: str | None

    @classmethod
    def of(cls, package: PackageInfo) -> LinkedPackage:
        """The package as an installer of this manifest links it."""
        return cls(package.name, package.version, package.sha256, _md5(package))

    @classmethod
    def of_record(cls, record: PackageRecord) -> LinkedPackage:
        """A record rattler wrote into ``conda-meta`` or read from a lock."""
        sha256, md5 = record.sha256, record.md5
        return cls(
            record.name.normalized,
            str(record.version),
            sha256.hex() if sha256 else None,
            md5.hex() if md5 else None,
        )


def kept_on_update(
    linked: Iterable[LinkedPackage], packages: Iterable[PackageInfo]
) -> frozenset[str]:
    """The entries of ``packages`` that an update over ``linked`` leaves where they are.

    rattler's transaction (py-rattler 0.28) pairs old and new packages by name and never
    reads the archive of one it keeps, so the installer need not stage those and a delta
    installer need not carry them. This rule keeps no more than rattler does: same name, the
    same sha256 (known on both sides) and the same md5 (or none on both); and when python's
    major.minor version changes, rattler relinks every ``noarch: python`` package, so none of
    those is kept then.
    """
    before = {p.name: p for p in linked}
    after = list(packages)
    old_python = before["python"].version if "python" in before else None
    new_python = next((p.version for p in after if p.name == "python"), None)
    relink = _minor(old_python) != _minor(new_python)
    kept = set()
    for package in after:
        old = before.get(package.name)
        if old is None or old.sha256 is None or old.sha256 != package.sha256:
            continue
        if old.md5 != _md5(package):
            continue
        if relink and package.record.get("noarch") == "python":
            continue
        kept.add(package.entry)
    return frozenset(kept)


def _md5(package: PackageInfo) -> str | None:
    md5 = package.record.get("md5")
    return md5 if isinstance(md5, str) and md5 else None


def _minor(version: str | None) -> tuple[str, ...] | None:
    """Python's major.minor: what rattler relinks ``noarch: python`` packages on."""
    return tuple(version.split(".")[:2]) if version else None


@dataclass(frozen=True)
class WheelPlan:
    """What an install does to the wheels: :func:`plan_wheels`."""

    #: file names of the earlier install's wheels left as they are
    keep: frozenset[str]
    #: file names of the earlier install's wheels removed (by their RECORD), in its order
    remove: tuple[str, ...]
    #: payload entries of the wheels installed, in the manifest's order
    install: tuple[str, ...]


def plan_wheels(
    previous: Mapping[str, str | None], wanted: Sequence[tuple[str, str | None]], force: bool
) -> WheelPlan:
    """Which wheels to keep, remove and install.

    ``previous`` maps the file names of the wheels an earlier install put there to their
    sha256; ``wanted`` lists the payload entries of the wheels to have, with their sha256. A
    wheel that is the same file with the same sha256 is kept, unless ``force`` (``-f``
    reinstalls everything); every other earlier wheel is removed, also one nothing replaces.
    """
    wanted_sha256 = {PurePosixPath(entry).name: sha256 for entry, sha256 in wanted}
    keep = frozenset(
        file_name
        for file_name, sha256 in previous.items()
        if not force and sha256 is not None and wanted_sha256.get(file_name) == sha256
    )
    return WheelPlan(
        keep=keep,
        remove=tuple(file_name for file_name in previous if file_name not in keep),
        install=tuple(entry for entry, _ in wanted if PurePosixPath(entry).name not in keep),
    )
