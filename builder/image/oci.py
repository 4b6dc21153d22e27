"""The OCI image format as lockship writes and reads it: media types, descriptors, canonical
JSON, an image layout folder (``oci-layout``, ``index.json``, ``blobs/sha256/``) and its
archive.

Every JSON document is written canonically (sorted keys, no spaces), so the same content
always has the same digest. The archive is an uncompressed tar of the layout with sorted
names, mtime 0, uid/gid 0 and no owner names: two layouts with the same blobs give the same
archive bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from lockship.builder.errors import BuildError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"
#: the Docker (v2, schema 2) types a base image may come with, and their OCI equivalents
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_EQUIVALENT = {
    DOCKER_MANIFEST: MANIFEST,
    DOCKER_LIST: INDEX,
    DOCKER_CONFIG: CONFIG,
    DOCKER_LAYER_GZIP: LAYER_GZIP,
}
MANIFEST_TYPES = (MANIFEST, DOCKER_MANIFEST)
INDEX_TYPES = (INDEX, DOCKER_LIST)
LAYER_TYPES = (LAYER_GZIP, LAYER_TAR, DOCKER_LAYER_GZIP)
#: the annotation that names an image in a layout's index.json (its tag)
REF_NAME = "org.opencontainers.image.ref.name"
LAYOUT_VERSION = "1.0.0"
#: blobs are copied into the archive in pieces of this size
COPY_SIZE = 1 << 20


class ImageError(BuildError):
    """An image cannot be built or pushed as asked."""


@dataclass(frozen=True)
class Descriptor:
    """A reference to a blob: what it is, its digest and size (and for manifests in an index,
    the platform)."""

    media_type: str
    digest: str
    size: int
    platform: Mapping[str, str] | None = None
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "mediaType": self.media_type,
            "digest": self.digest,
            "size": self.size,
        }
        if self.platform:
            data["platform"] = dict(self.platform)
        if self.annotations:
            data["annotations"] = dict(self.annotations)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Descriptor:
        try:
            return cls(
                media_type=str(data["mediaType"]),
                digest=str(data["digest"]),
                size=int(data["size"]),
                platform=data.get("platform"),
                annotations=data.get("annotations") or {},
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ImageError(f"a descriptor lacks {e}: {dict(data)}") from e


def canonical_json(document: Mapping[str, Any] | list[Any]) -> bytes:
    return json.dumps(document, sort_keys=True, separators=(",", ":")).encode()


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class BlobStore:
    """The ``blobs/sha256/`` folder of a layout being written."""

    layout: Path

    @property
    def folder(self) -> Path:
        return self.layout / "blobs" / "sha256"

    def path(self, digest: str) -> Path:
        algorithm, _, hex_digest = digest.partition(":")
        if algorithm != "sha256" or len(hex_digest) != 64:
            raise ImageError(f"unsupported digest {digest!r} (only sha256 is)")
        return self.folder / hex_digest

    def put_bytes(self, media_type: str, data: bytes, **extra: Any) -> Descriptor:
        digest = sha256_digest(data)
        target = self.path(digest)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            partial = target.with_name(target.name + ".part")
            partial.write_bytes(data)
            os.replace(partial, target)
        return Descriptor(media_type, digest, len(data), **extra)

    def put_json(self, media_type: str, document: Mapping[str, Any], **extra: Any) -> Descriptor:
        return self.put_bytes(media_type, canonical_json(document), **extra)

    def put_file(self, descriptor: Descriptor, source: Path) -> Descriptor:
        """Add a blob whose digest is already known (hard-linked or copied from ``source``)."""
        target = self.path(descriptor.digest)
        if target.exists():
            return descriptor
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        try:
            os.link(source, partial)
        except OSError:
            with open(source, "rb") as src, open(partial, "wb") as dst:
                while chunk := src.read(1 << 20):
                    dst.write(chunk)
        os.replace(partial, target)
        return descriptor

    def read_json(self, descriptor: Descriptor) -> dict[str, Any]:
        data = self.path(descriptor.digest).read_bytes()
        if sha256_digest(data) != descriptor.digest:
            raise ImageError(f"the blob {descriptor.digest} does not match its digest")
        document = json.loads(data)
        if not isinstance(document, dict):
            raise ImageError(f"the blob {descriptor.digest} is not a JSON object")
        return document


def image_manifest(
    config: Descriptor, layers: Iterable[Descriptor], annotations: Mapping[str, str]
) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.to_json(),
        "layers": [layer.to_json() for layer in layers],
        "annotations": dict(annotations),
    }


def image_index(manifests: Iterable[Descriptor], annotations: Mapping[str, str]) -> dict[str, Any]:
    return {
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [m.to_json() for m in manifests],
        "annotations": dict(annotations),
    }


def write_layout_index(layout: Path, top: Descriptor) -> None:
    """Write ``oci-layout`` and ``index.json`` naming ``top`` (a manifest or an index)."""
    (layout / "oci-layout").write_bytes(canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))
    index = {"schemaVersion": 2, "mediaType": INDEX, "manifests": [top.to_json()]}
    (layout / "index.json").write_bytes(canonical_json(index))


#: the file ``docker load`` before Docker 25 reads (its docker-archive format), which Docker 25's
#: own ``docker save`` writes beside ``index.json`` too
DOCKER_MANIFEST = "manifest.json"


def write_docker_manifest(layout: Path, manifest: Mapping[str, Any], tag: str) -> None:
    """Write ``manifest.json`` naming one image's config and layers by their blob paths, so
    that every ``docker load`` takes the archive, and tags it ``tag``."""

    def blob(descriptor: Mapping[str, Any]) -> str:
        return f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"

    entry = {
        "Config": blob(manifest["config"]),
        "RepoTags": [tag],
        "Layers": [blob(layer) for layer in manifest["layers"]],
    }
    (layout / DOCKER_MANIFEST).write_bytes(canonical_json([entry]))


class _HashingWriter:
    """Passes bytes on to ``target``, hashing and counting them."""

    def __init__(self, target: IO[bytes]) -> None:
        self.target, self.sha256, self.size = target, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.target.write(data)

    def tell(self) -> int:
        return self.size


class _HashingReader:
    """Reads ``source``, hashing what it reads."""

    def __init__(self, source: IO[bytes]) -> None:
        self.source, self.sha256 = source, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.source.read(size)
        self.sha256.update(data)
        return data


def pack_layout(layout: Path, out: IO[bytes]) -> str:
    """Write the layout folder as a tar archive (``oci-archive:``) into ``out``; the
    archive's sha256 (hex), computed on the way rather than by reading it again. Every blob
    is hashed as it is copied and must match its name (a blob from the layer cache or a base
    changed on disk stops the build rather than giving an image that will not load)."""
    names = ["oci-layout", "index.json", "blobs", "blobs/sha256"]
    if (layout / DOCKER_MANIFEST).is_file():
        names.insert(2, DOCKER_MANIFEST)
    names += sorted(f"blobs/sha256/{p.name}" for p in (layout / "blobs" / "sha256").iterdir())
    hashed = _HashingWriter(out)
    with tarfile.open(fileobj=hashed, mode="w", format=tarfile.PAX_FORMAT) as tar:  # type: ignore[call-overload]
        tar.copybufsize = COPY_SIZE
        for name in names:
            path = layout / name
            info = tarfile.TarInfo(name)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if path.is_dir():
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tar.addfile(info)
                continue
            info.mode, info.size = 0o644, path.stat().st_size
            with open(path, "rb") as f:
                reader = _HashingReader(f)
                tar.addfile(info, reader)
            if name.startswith("blobs/sha256/") and reader.sha256.hexdigest() != path.name:
                raise ImageError(
                    f"the image's blob sha256:{path.name} has other bytes (changed on disk?): "
                    f"delete the build cache's image-layers folder (and check the --base "
                    f"image it may come from), then build again"
                )
    return hashed.sha256.hexdigest()


def platform_of(subdir: str) -> dict[str, str]:
    """The OCI platform of a conda platform (``linux-64`` -> linux/amd64)."""
    architectures = {
        "linux-64": ("amd64", None),
        "linux-aarch64": ("arm64", "v8"),
        "linux-ppc64le": ("ppc64le", None),
        "linux-s390x": ("s390x", None),
    }
    if subdir not in architectures:
        raise ImageError(
            f"images are built for linux-64, linux-aarch64, linux-ppc64le and linux-s390x, "
            f"not {subdir}"
        )
    architecture, variant = architectures[subdir]
    platform = {"os": "linux", "architecture": architecture}
    if variant:
        platform["variant"] = variant
    return platform
