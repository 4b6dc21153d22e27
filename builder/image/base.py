"""The base image an environment goes on: read from an OCI layout folder, an OCI archive or
a registry (resolved and recorded by digest), checked before anything is written: its
platform, its media types, and that its C library is glibc at least as new as the
environment needs.
"""

from __future__ import annotations

import gzip
import io
import json
import re
import tarfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Any

from lockship.builder.image.oci import (
    CONFIG,
    DOCKER_CONFIG,
    INDEX_TYPES,
    LAYER_TAR,
    LAYER_TYPES,
    MANIFEST_TYPES,
    OCI_EQUIVALENT,
    BlobStore,
    Descriptor,
    ImageError,
    platform_of,
)
from lockship.builder.image.registry import Reference, RegistryClient

#: the distroless Debian 12 "base" image (glibc, libssl, ca-certificates, tzdata; no shell)
DEFAULT_BASE = (
    "gcr.io/distroless/base-debian12"
    "@sha256:9e9b50d2048db3741f86a48d939b4e4cc775f5889b3496439343301ff54cdba8"
)
_LIBC = re.compile(r"(^|/)(libc\.so\.6|libc-2\.\d+\.so)$")
_GLIBC_VERSION = re.compile(rb"GLIBC_2\.(\d+)(?:\.\d+)?\x00")
_GLIBC_NEED = re.compile(r"^__glibc\s*>=\s*2\.(\d+)")


@dataclass(frozen=True)
class BaseImage:
    """A base image for one platform: where it came from, its manifest's digest, its config
    and its layers (each blob in ``store``)."""

    source: str
    digest: str
    config: dict[str, Any]
    layers: tuple[Descriptor, ...]
    store: BlobStore
    glibc: tuple[int, int] | None
    #: ``REGISTRY/REPOSITORY@DIGEST`` for a base read from a registry
    reference: str | None = None

    @property
    def diff_ids(self) -> list[str]:
        return list(self.config.get("rootfs", {}).get("diff_ids", []))

    @property
    def env(self) -> dict[str, str]:
        pairs = (item.partition("=") for item in self.config.get("config", {}).get("Env") or [])
        return {key: value for key, _, value in pairs}


def open_base(spec: str, platform: str, work: Path, auth: Sequence[Path]) -> BaseImage:
    """The base ``spec`` (a layout folder, an archive or a registry reference) for
    ``platform``, its blobs in a layout under ``work`` (or in the folder given)."""
    path = Path(spec).expanduser()
    if path.is_dir():
        if not (path / "oci-layout").is_file():
            raise ImageError(f"{path} is a folder but not an OCI image layout (no oci-layout)")
        return _from_layout(str(path), BlobStore(path), platform)
    if path.is_file():
        layout = work / "base"
        _unpack_archive(path, layout)
        return _from_layout(str(path), BlobStore(layout), platform)
    if path.suffix == ".tar" or spec.startswith((".", "/", "~")):
        raise ImageError(f"the base image {spec} does not exist")
    reference = Reference.parse(spec, also=", nor an OCI archive or layout folder")
    return _from_registry(reference, platform, work / "base", auth)


def _unpack_archive(archive: Path, layout: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(layout, filter="data")
    except (tarfile.TarError, OSError) as e:
        raise ImageError(f"cannot read the base image archive {archive}: {e}") from e
    if not (layout / "oci-layout").is_file():
        raise ImageError(
            f"{archive} is not an OCI image archive (no oci-layout); docker save archives "
            "are not read: copy it with skopeo copy docker-archive:... oci-archive:..."
        )


def _from_layout(source: str, store: BlobStore, platform: str) -> BaseImage:
    try:
        index = json.loads((store.layout / "index.json").read_text(encoding="utf-8"))
        top = [Descriptor.from_json(d) for d in index.get("manifests", [])]
    except (OSError, ValueError, AttributeError) as e:
        raise ImageError(f"cannot read the index of the base image {source}: {e}") from e
    descriptor = _choose(source, top, platform, store.read_json)
    return _finish(source, store, descriptor, platform)


def _choose(source: str, candidates: list[Descriptor], platform: str, read: Any) -> Descriptor:
    """The manifest for ``platform`` among ``candidates``, through nested indexes."""
    wanted = platform_of(platform)
    manifests: list[Descriptor] = []
    for d in candidates:
        if d.media_type in INDEX_TYPES:
            nested = read(d)
            manifests += [Descriptor.from_json(m) for m in nested.get("manifests", [])]
        elif d.media_type in MANIFEST_TYPES:
            manifests.append(d)
        else:
            raise ImageError(
                f"the base image {source} has a manifest of unknown media type {d.media_type}"
            )
    if not manifests:
        raise ImageError(f"the base image {source} holds no image")
    with_platform = [m for m in manifests if m.platform]
    if not with_platform and len(manifests) == 1:
        return manifests[0]  # its config says which platform: checked in _finish
    matching = [m for m in with_platform if _same_platform(m.platform or {}, wanted)]
    if not matching:
        found = ", ".join(sorted({_show(m.platform or {}) for m in with_platform}))
        raise ImageError(
            f"the base image {source} is for {found or 'no platform'}, not {platform} "
            f"({_show(wanted)}); choose a base image for {platform}"
        )
    return matching[0]


def _same_platform(have: Any, wanted: dict[str, str]) -> bool:
    if have.get("os") != wanted["os"] or have.get("architecture") != wanted["architecture"]:
        return False
    return have.get("variant") in (None, "", wanted.get("variant"))


def _show(platform: Any) -> str:
    text = f"{platform.get('os', '?')}/{platform.get('architecture', '?')}"
    return text + (f"/{platform['variant']}" if platform.get("variant") else "")


def _finish(source: str, store: BlobStore, descriptor: Descriptor, platform: str) -> BaseImage:
    if descriptor.media_type not in MANIFEST_TYPES:
        raise ImageError(
            f"the base image {source} has a manifest of unknown media type {descriptor.media_type}"
        )
    manifest = store.read_json(descriptor)
    config_descriptor = Descriptor.from_json(manifest.get("config") or {})
    if config_descriptor.media_type not in (CONFIG, DOCKER_CONFIG):
        raise ImageError(
            f"the base image {source} has a config of unknown media type "
            f"{config_descriptor.media_type}"
        )
    config = store.read_json(config_descriptor)
    wanted = platform_of(platform)
    have = {k: config.get(k) for k in ("os", "architecture", "variant") if config.get(k)}
    if not _same_platform(have, wanted):
        raise ImageError(
            f"the base image {source} is for {_show(have)}, not {platform} ({_show(wanted)}); "
            f"choose a base image for {platform}"
        )
    layers = []
    for item in manifest.get("layers") or []:
        layer = Descriptor.from_json(item)
        if layer.media_type not in LAYER_TYPES:
            raise ImageError(
                f"the base image {source} has a layer of unknown media type {layer.media_type}"
            )
        # the same bytes under the OCI name (a Docker gzip layer is an OCI gzip layer)
        layers.append(
            Descriptor(
                OCI_EQUIVALENT.get(layer.media_type, layer.media_type), layer.digest, layer.size
            )
        )
    if len(layers) != len(config.get("rootfs", {}).get("diff_ids", [])):
        raise ImageError(f"the base image {source}'s config does not list one diff_id per layer")
    glibc = _glibc_version(store, layers)
    return BaseImage(source, descriptor.digest, config, tuple(layers), store, glibc)


def _from_registry(
    reference: Reference, platform: str, layout: Path, auth: Sequence[Path]
) -> BaseImage:
    client = RegistryClient(reference, auth)
    store = BlobStore(layout)
    store.folder.mkdir(parents=True, exist_ok=True)
    wanted = reference.digest or reference.tag or "latest"
    media_type, data = client.manifest(wanted)
    top = store.put_bytes(OCI_EQUIVALENT.get(media_type, media_type), data)
    source = str(reference)

    def read(d: Descriptor) -> dict[str, Any]:
        if not store.path(d.digest).exists():
            kind, body = client.manifest(d.digest)
            store.put_bytes(kind, body)
        return store.read_json(d)

    descriptor = _choose(source, [top], platform, read)
    manifest = read(descriptor)
    client_blobs = [manifest.get("config") or {}, *(manifest.get("layers") or [])]
    for item in client_blobs:
        d = Descriptor.from_json(item)
        if not store.path(d.digest).exists():
            partial = store.folder / f"{d.digest[7:]}.part"
            client.blob(d.digest, partial)
            partial.replace(store.path(d.digest))
    base = _finish(source, store, descriptor, platform)
    name = f"{reference.registry}/{reference.repository}"
    pinned = f"{name}@{descriptor.digest}"
    return replace(base, source=pinned, reference=pinned)


def _glibc_version(store: BlobStore, layers: Sequence[Descriptor]) -> tuple[int, int] | None:
    """The newest ``GLIBC_2.x`` version the base's ``libc.so.6`` defines, if it has one."""
    best: tuple[int, int] | None = None
    for layer in layers:
        for data in _libc_files(store.path(layer.digest), layer.media_type):
            found = [int(m) for m in _GLIBC_VERSION.findall(data)]
            if found and (best is None or (2, max(found)) > best):
                best = (2, max(found))
    return best


def _libc_files(blob: Path, media_type: str) -> Iterator[bytes]:
    opener: IO[bytes]
    with open(blob, "rb") as raw:
        # ISA-L inflates about twice as fast as zlib; tarfile reads in small pieces
        opener = (
            raw
            if media_type == LAYER_TAR
            else io.BufferedReader(gzip.GzipFile(fileobj=raw), 1 << 20)
        )
        try:
            with tarfile.open(fileobj=opener, mode="r|") as tar:
                for member in tar:
                    if member.isfile() and _LIBC.search(member.name):
                        extracted = tar.extractfile(member)
                        if extracted is not None:
                            yield extracted.read()
        except (tarfile.TarError, OSError, EOFError) as e:
            raise ImageError(f"cannot read a layer of the base image ({blob.name}): {e}") from e


def needed_glibc(virtual_packages: Sequence[str]) -> tuple[int, int] | None:
    """The glibc the environment needs (its ``__glibc >=2.x`` requirements), if any."""
    minors = [int(m[1]) for v in virtual_packages if (m := _GLIBC_NEED.match(v))]
    return (2, max(minors)) if minors else None


def check_glibc(base: BaseImage, needed: tuple[int, int] | None, platform: str) -> None:
    if base.glibc is None:
        raise ImageError(
            f"the base image {base.source} has no glibc (no libc.so.6), which the {platform} "
            "environment's programs need; choose a base with glibc (e.g. the default, "
            "distroless base-debian12)"
        )
    if needed is not None and base.glibc < needed:
        raise ImageError(
            f"the base image {base.source} has glibc {base.glibc[0]}.{base.glibc[1]}, older "
            f"than the {needed[0]}.{needed[1]} the environment needs; choose a newer base"
        )
