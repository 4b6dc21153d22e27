"""Every check that can fail before anything is written, made once: :func:`preflight`.

It returns the :class:`InstallPlan` that :func:`stub.install.install` carries out, so an
install cannot start without it and never repeats it.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from lockship.stub.delta import check_delta_base
from lockship.stub.errors import InstallError
from lockship.stub.finish import read_marker
from lockship.stub.prefix import check_prefix
from lockship.stub.shared.manifest import Manifest
from lockship.stub.system import check_virtual_packages

#: ``LOCKSHIP_UNPACK_WORKERS=N`` sets the number of worker processes; 0 lets rattler unpack
WORKERS_ENV = "LOCKSHIP_UNPACK_WORKERS"
MAX_DEFAULT_WORKERS = 8
#: free space required beyond what is written (metadata, filesystem slack)
SPACE_MARGIN = 1.10
SPACE_EXTRA = 1024 * 1024


@dataclass(frozen=True)
class InstallRequest:
    """What the user asked for."""

    prefix: Path
    force: bool = False
    update: bool = False
    run_post_install: bool = True
    unattended: bool = True
    installer_name: str = "installer"


@dataclass(frozen=True)
class InstallPlan:
    """A request that passed :func:`preflight` for a manifest (only preflight makes one)."""

    manifest: Manifest
    request: InstallRequest
    #: worker processes that unpack the archives; 0: rattler unpacks verified copies
    workers: int


class UpdateRefused(InstallError):
    pass


class DiskSpaceError(InstallError):
    def __init__(self, prefix: Path, needed: int, free: int) -> None:
        self.needed, self.free = needed, free
        super().__init__(
            f"not enough free disk space for {prefix}: needs {_mb(needed)}, "
            f"{_mb(free)} free; free some space or choose another prefix"
        )


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def preflight(
    manifest: Manifest,
    request: InstallRequest,
    *,
    environ: Mapping[str, str] = os.environ,
    platform: str = sys.platform,
    detected: dict[str, str] | None = None,
) -> InstallPlan:
    """Check everything that can fail before the prefix is touched; the plan to install by.

    ``detected`` replaces the machine's virtual packages (tests); ``environ`` and ``platform``
    are the process's unless given.
    """
    workers = worker_count(environ, platform)
    check_virtual_packages(manifest.virtual_packages, detected)
    if manifest.delta is not None:
        check_delta_request(manifest, request)
    elif request.update:
        check_update_target(request.prefix, manifest, force=request.force)
    check_prefix(
        request.prefix,
        force=request.force,
        update=request.update,
        max_length=manifest.max_prefix_length,
    )
    if environ.get("LOCKSHIP_SKIP_DISK_CHECK") != "1":
        check_disk_space(request.prefix, required_space(manifest, copies=workers == 0))
    return InstallPlan(manifest, request, workers)


def worker_count(environ: Mapping[str, str], platform: str) -> int:
    """How many worker processes unpack archives (0: rattler unpacks verified copies).

    Workers are forked, which is only safe to rely on on Linux: elsewhere always 0.
    """
    linux = platform.startswith("linux")
    configured = environ.get(WORKERS_ENV)
    if configured is None:
        return min(os.cpu_count() or 1, MAX_DEFAULT_WORKERS) if linux else 0
    try:
        count = int(configured)
    except ValueError:
        count = -1
    if not 0 <= count <= 64:
        raise InstallError(f"{WORKERS_ENV} must be a number from 0 to 64, not {configured!r}")
    return count if linux else 0


def required_space(manifest: Manifest, *, copies: bool) -> int:
    """Bytes the installation writes: the unpacked packages, plus the archive copies if any.

    Files without a prefix placeholder are hardlinked from the unpacked packages, so the
    installed files take little more than the unpacked ones.
    """
    written = manifest.installed_size + (manifest.carried_size if copies else 0)
    return int(written * SPACE_MARGIN) + SPACE_EXTRA


def check_disk_space(prefix: Path, needed: int) -> None:
    probe = prefix
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise DiskSpaceError(prefix, needed, free)


def check_update_target(prefix: Path, manifest: Manifest, *, force: bool) -> None:
    """``-u`` only replaces an environment made by an installer of the same name."""
    if not prefix.exists() or force:
        return
    marker = read_marker(prefix)
    if marker is None:
        raise UpdateRefused(
            f"{prefix} was not made by a lockship installer, so -u cannot update it; "
            "pass -f as well to install over it anyway"
        )
    if marker.get("name") != manifest.name:
        raise UpdateRefused(
            f"{prefix} holds {marker.get('name')} {marker.get('version')}, not {manifest.name}; "
            "pass -f as well to replace it anyway"
        )


def check_delta_request(manifest: Manifest, request: InstallRequest) -> None:
    """A delta installer only updates (it implies ``-u``), and only its base."""
    delta = manifest.delta
    if delta is None:
        return
    if request.force:
        raise UpdateRefused(
            f"this installer only updates {delta.name} {delta.version} to {manifest.version}, "
            f"so it cannot take -f; reinstall with the full installer of {manifest.name} "
            f"{manifest.version}"
        )
    check_delta_base(request.prefix, manifest)
