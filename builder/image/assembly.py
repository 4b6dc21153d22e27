"""An image build from start to end: bases opened and checked first, then per platform the
environment, its layers, config and manifest; then the layout's index (one manifest, or an
image index for several platforms), the archive, and the push.

Everything the image holds is a function of the lock, the base and the settings: the time it
names is ``SOURCE_DATE_EPOCH`` (else 0), so two builds on different machines and paths give
the same manifest digests.
"""

from __future__ import annotations

import datetime
import os
import re
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from lockship.builder.image.base import (
    DEFAULT_BASE,
    BaseImage,
    check_glibc,
    needed_glibc,
    open_base,
)
from lockship.builder.image.environment import DEFAULT_BASE_PATH, make_environment
from lockship.builder.image.layers import (
    MAX_LAYERS,
    Layer,
    LayerCache,
    plan_layers,
    write_layers,
)
from lockship.builder.image.oci import (
    CONFIG,
    INDEX,
    MANIFEST,
    REF_NAME,
    BlobStore,
    Descriptor,
    ImageError,
    image_index,
    image_manifest,
    pack_layout,
    platform_of,
    write_docker_manifest,
    write_layout_index,
)
from lockship.builder.image.registry import Reference, RegistryClient, auth_files
from lockship.builder.image.settings import ImageSettings
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.progress import Reporter

#: what follows ``NAME-VERSION[-PLATFORM]`` in the image archive's name
SUFFIX = ".oci.tar"
_TAG = re.compile(r"[^A-Za-z0-9_.-]")


def image_file_name(name: str, version: str, platforms: Sequence[str]) -> str:
    """``NAME-VERSION-PLATFORM.oci.tar``; several platforms share ``NAME-VERSION.oci.tar``."""
    if len(platforms) == 1:
        return f"{name}-{version}-{platforms[0]}{SUFFIX}"
    return f"{name}-{version}{SUFFIX}"


def source_date_epoch(environ: Mapping[str, str]) -> int:
    text = environ.get("SOURCE_DATE_EPOCH", "").strip()
    if not text:
        return 0
    if not text.isdigit():
        raise ImageError(f"SOURCE_DATE_EPOCH must be a number of seconds, not {text!r}")
    return int(text)


def _rfc3339(epoch: int) -> str:
    return datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class PlatformImage:
    platform: str
    manifest: Descriptor
    layers: tuple[Layer, ...]
    base: BaseImage
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class ImageResult:
    path: Path
    #: the digest of what index.json names: the manifest, or the index of several
    digest: str
    images: tuple[PlatformImage, ...]
    #: bytes of blobs a push sent (None: not pushed)
    pushed_bytes: int | None = None


class ImageBuild:
    """One image archive being made in ``work`` for ``platforms``; with ``cache`` (the build
    cache), the unpacked packages and the finished layers are kept there for the next build
    (``image-packages/``, ``image-layers/``)."""

    def __init__(
        self,
        settings: ImageSettings,
        name: str,
        version: str,
        platforms: Sequence[str],
        work: Path,
        *,
        epoch: int,
        revision: str | None = None,
        environ: Mapping[str, str] = os.environ,
        cache: Path | None = None,
    ) -> None:
        self.settings, self.name, self.version = settings, name, version
        self.package_cache = cache / "image-packages" if cache is not None else None
        self.layer_cache = LayerCache(cache / "image-layers") if cache is not None else None
        self.work, self.epoch, self.revision = work, epoch, revision
        self.prefix = PurePosixPath(settings.prefix or f"/opt/{name}")
        if not self.prefix.is_absolute() or ".." in self.prefix.parts:
            raise ImageError(f"--image-prefix must be an absolute path, not {self.prefix}")
        self.store = BlobStore(work / "layout")
        self.auth = auth_files(settings.registry_auth_file, dict(environ))
        self.push = Reference.parse(settings.push) if settings.push else None
        if self.push is not None and not self.push.tag:
            raise ImageError(f"--push {settings.push}: name a tag (REGISTRY/REPOSITORY:TAG)")
        for platform in platforms:
            platform_of(platform)
        self.bases: dict[str, BaseImage] = {}
        self.images: list[PlatformImage] = []

    def open_bases(self, platforms: Sequence[str]) -> None:
        """Read and check every platform's base before anything is written."""
        for platform in platforms:
            base = open_base(
                self.settings.base or DEFAULT_BASE, platform, self.work / platform, self.auth
            )
            if len(base.layers) >= MAX_LAYERS - 2:
                raise ImageError(
                    f"the base image {base.source} has {len(base.layers)} layers, which leaves "
                    f"no room under {MAX_LAYERS} for the environment's"
                )
            self.bases[platform] = base

    def check_environment(self, manifest: Manifest) -> None:
        check_glibc(
            self.bases[manifest.platform],
            needed_glibc(manifest.virtual_packages),
            manifest.platform,
        )

    def add_platform(
        self,
        manifest: Manifest,
        archives: Mapping[str, Path],
        wheels: Sequence[tuple[str, Path, str]],
        reporter: Reporter,
    ) -> PlatformImage:
        platform = manifest.platform
        base = self.bases[platform]
        self.check_environment(manifest)
        base_path = base.env.get("PATH", DEFAULT_BASE_PATH)
        folder = self.work / f"env-{platform}"
        environment = make_environment(
            folder,
            self.prefix,
            manifest,
            archives,
            wheels,
            work=self.work / f"stage-{platform}",
            epoch=self.epoch,
            base_path=base_path,
            reporter=reporter,
            package_cache=self.package_cache,
        )
        groups = plan_layers(folder, MAX_LAYERS - len(base.layers))
        reporter.start(f"Writing image layers ({platform})", len(groups), unit="layer")
        layers = write_layers(
            self.store,
            folder,
            self.prefix,
            groups,
            self.epoch,
            lambda: reporter.advance(1),
            cache=self.layer_cache,
        )
        reporter.finish()
        for layer in base.layers:
            self.store.put_file(layer, base.store.path(layer.digest))
        variables = environment.variables
        config = self._config(base, platform, variables, layers)
        config_descriptor = self.store.put_json(CONFIG, config)
        annotations = self._annotations(base)
        document = image_manifest(
            config_descriptor, [*base.layers, *(layer.descriptor for layer in layers)], annotations
        )
        descriptor = self.store.put_json(MANIFEST, document, platform=platform_of(platform))
        shutil.rmtree(folder, ignore_errors=True)
        shutil.rmtree(self.work / f"stage-{platform}", ignore_errors=True)
        warnings = tuple(
            f"{script} does more than set variables; only the variables it sets are in the "
            "image's Env"
            for script in environment.warnings
        )
        image = PlatformImage(platform, descriptor, tuple(layers), base, warnings)
        self.images.append(image)
        return image

    def _annotations(self, base: BaseImage) -> dict[str, str]:
        annotations = {
            "org.opencontainers.image.title": self.name,
            "org.opencontainers.image.version": self.version,
            "org.opencontainers.image.created": _rfc3339(self.epoch),
            "org.opencontainers.image.base.digest": base.digest,
        }
        if base.reference is not None:  # a local base's path would differ between machines
            annotations["org.opencontainers.image.base.name"] = base.reference
        if self.revision:
            annotations["org.opencontainers.image.revision"] = self.revision
        return annotations | dict(self.settings.annotations)

    def _config(
        self, base: BaseImage, platform: str, variables: Mapping[str, str], layers: Sequence[Layer]
    ) -> dict[str, Any]:
        inherited = dict(base.config.get("config") or {})
        env = base.env | dict(variables)
        inherited["Env"] = [f"{key}={value}" for key, value in sorted(env.items())]
        settings = self.settings
        for key, value in (
            ("User", settings.user),
            ("WorkingDir", settings.workdir),
            ("Entrypoint", list(settings.entrypoint) if settings.entrypoint is not None else None),
            ("Cmd", list(settings.cmd) if settings.cmd is not None else None),
        ):
            if value is not None:
                inherited[key] = value
        inherited["Labels"] = dict(inherited.get("Labels") or {}) | self._annotations(base)
        created = _rfc3339(self.epoch)
        history = list(base.config.get("history") or [])
        history += [
            {"created": created, "created_by": f"lockship: {layer.group.name}"} for layer in layers
        ]
        return {
            **platform_of(platform),
            "created": created,
            "config": inherited,
            "rootfs": {
                "type": "layers",
                "diff_ids": base.diff_ids + [layer.diff_id for layer in layers],
            },
            "history": history,
        }

    @property
    def ref_name(self) -> str:
        return f"{self.name}:{_TAG.sub('_', self.version)[:128]}"

    def write(self, out: IO[bytes]) -> tuple[str, str]:
        """Write the layout's index and the archive into ``out``; the top digest and the
        archive's sha256 (hex)."""
        manifests = [image.manifest for image in self.images]
        if len(manifests) == 1:
            top = manifests[0]
        else:
            top = self.store.put_json(INDEX, image_index(manifests, {}))
        named = Descriptor(
            top.media_type, top.digest, top.size, annotations={REF_NAME: self.ref_name}
        )
        write_layout_index(self.store.layout, named)
        if len(manifests) == 1:  # older Dockers load one image, from manifest.json
            write_docker_manifest(self.store.layout, self.store.read_json(top), self.ref_name)
        return top.digest, pack_layout(self.store.layout, out)

    def push_image(self) -> int:
        """Push the written layout to ``--push``; the bytes of blobs sent."""
        if self.push is None:
            raise ImageError("internal error: no --push reference")
        client = RegistryClient(self.push, self.auth)
        # the layout names its image by ref_name; the registry gets the --push tag
        layout = self.store.layout
        index = layout / "index.json"
        saved = index.read_bytes()
        try:
            index.write_bytes(saved.replace(self.ref_name.encode(), str(self.push.tag).encode()))
            return client.push_layout(layout, str(self.push.tag))
        finally:
            index.write_bytes(saved)


def git_revision(folder: Path) -> str | None:
    """The commit checked out in ``folder``'s git work tree, if it is one."""
    git = shutil.which("git")
    if git is None:
        return None
    done = subprocess.run(
        [git, "-C", str(folder), "rev-parse", "HEAD"],
        capture_output=True,
        text=True,
        check=False,
    )
    revision = done.stdout.strip()
    return revision if done.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", revision) else None
