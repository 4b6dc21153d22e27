"""What a frozen installer stub is: its file name, its sidecar, and its key in the stub cache.

Next to each stub lies its sidecar ``<stub>.json`` (:class:`StubFacts`), written when it was
frozen: what it was frozen with and from, and the newest glibc any binary inside it needs, which
the ``.sh`` header checks before running the stub. Frozen stubs are cached under a key made of
the lockship version, the sources that decide the freeze (:func:`freeze_inputs`) and the
toolchain that freezes (:func:`toolchain`): a stub is never reused across a change of any.
"""

from __future__ import annotations

import hashlib
import json
import platform as _platform
from dataclasses import asdict, dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from lockship import stub
from lockship.builder.errors import StubError
from lockship.builder.stubs.elf import parse_version
from lockship.stub.shared.boundary import file_sha256

STUB_BASENAME = "lockship-stub"
FACTS_SUFFIX = ".json"
#: what to tell users whose stub or sidecar cannot be used; installed with the wheel
FREEZE_COMMAND = "lockship freeze-stub -o PATH"


@dataclass(frozen=True)
class StubFacts:
    """What a frozen stub needs and what it was made from: its sidecar ``<stub>.json``."""

    platform: str
    #: the newest GLIBC_x.y any bundled binary needs; None for a stub that is not a Linux ELF
    glibc: str | None
    python: str
    pyinstaller: str
    #: :func:`stub_identity` of the sources the stub was frozen from
    stub: str
    size: int
    sha256: str

    @classmethod
    def from_json(cls, data: object) -> StubFacts:
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        kinds = {"platform": str, "python": str, "pyinstaller": str, "stub": str, "size": int}
        for name, kind in {**kinds, "sha256": str}.items():
            if not isinstance(data.get(name), kind):
                raise ValueError(f"{name!r} is missing or not a {kind.__name__}")
        glibc = data.get("glibc")
        if glibc is not None and not (isinstance(glibc, str) and parse_version(glibc)):
            raise ValueError(f"'glibc' is not a version: {glibc!r}")
        return cls(
            platform=data["platform"],
            glibc=glibc,
            python=data["python"],
            pyinstaller=data["pyinstaller"],
            stub=data["stub"],
            size=data["size"],
            sha256=data["sha256"],
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def stub_file_name(platform: str) -> str:
    return f"{STUB_BASENAME}-{platform}" + (".exe" if platform.startswith("win-") else "")


def facts_path(stub_path: Path) -> Path:
    """Where the sidecar of ``stub_path`` lies: ``<stub>.json``."""
    return stub_path.with_name(stub_path.name + FACTS_SUFFIX)


#: modules of this folder that find and describe stubs rather than make them
_NOT_FREEZE_INPUTS = frozenset({"facts.py", "lookup.py"})
_SOURCE_SUFFIXES = frozenset({".py", ".c", ".h"})


def freeze_inputs() -> list[Path]:
    """The sources that decide what a freeze produces: every source file of the stub package
    and of this folder (the freeze, the pack, ``native/``), but for the modules that only find
    and describe stubs (this one, the lookup), so that editing those keeps every cached stub.
    A file added to either folder is a freeze input without being listed."""
    here = Path(__file__).parent
    return [
        *_sources(Path(stub.__file__).parent),
        *(p for p in _sources(here) if p.parent != here or p.name not in _NOT_FREEZE_INPUTS),
    ]


def _sources(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix in _SOURCE_SUFFIXES and "__pycache__" not in p.parts and p.is_file()
    )


def stub_source_digest() -> str:
    """A short hash of :func:`freeze_inputs` and their paths below ``lockship/``: the same on
    every machine for one checkout."""
    root = Path(stub.__file__).parent.parent
    digest = hashlib.sha256()
    for source in freeze_inputs():
        digest.update(source.relative_to(root).as_posix().encode())
        digest.update(source.read_bytes())
    return digest.hexdigest()[:12]


def stub_identity() -> str:
    """``<version>-<source digest>``: what a fresh freeze records as the sidecar's ``stub``."""
    return f"{stub.__version__}-{stub_source_digest()}"


def toolchain() -> dict[str, str]:
    """The versions of what freezes a stub here: Python, PyInstaller and py-rattler."""

    def installed(distribution: str) -> str:
        try:
            return version(distribution)
        except PackageNotFoundError:
            return "none"

    return {
        "python": _platform.python_version(),
        "pyinstaller": installed("pyinstaller"),
        "py-rattler": installed("py-rattler"),
    }


def stub_cache_key() -> str:
    """The stub cache folder name: the stub's identity and the toolchain, hashed together."""
    digest = hashlib.sha256(stub_identity().encode())
    digest.update(json.dumps(toolchain(), sort_keys=True).encode())
    return f"{stub.__version__}-{digest.hexdigest()[:12]}"


def cached_stub_path(cache_dir: Path, platform: str) -> Path:
    return cache_dir / "stubs" / stub_cache_key() / stub_file_name(platform)


def stub_facts(stub_path: Path, *, verify: bool = True) -> StubFacts | None:
    """The facts in the sidecar of ``stub_path``; None if it has none (a stub made elsewhere).

    Raises StubError if the sidecar is unreadable or describes another binary (its size, and
    with ``verify`` its sha256, differ from the stub's).
    """
    sidecar = facts_path(stub_path)
    try:
        text = sidecar.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as e:
        raise StubError(f"cannot read {sidecar}: {e.strerror}") from e
    try:
        facts = StubFacts.from_json(json.loads(text))
    except ValueError as e:
        raise StubError(f"{sidecar} is not a valid stub sidecar: {e}") from e
    try:
        size = stub_path.stat().st_size
        sha256 = file_sha256(stub_path) if verify and size == facts.size else facts.sha256
    except OSError as e:
        raise StubError(f"cannot read the stub {stub_path}: {e.strerror}") from e
    if (size, sha256) != (facts.size, facts.sha256):
        raise StubError(
            f"{sidecar} describes another binary than {stub_path} (its size or sha256 differ); "
            f"freeze the stub again ({FREEZE_COMMAND})"
        )
    return facts
