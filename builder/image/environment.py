"""The environment an image carries, made by the installer's own pieces in a folder on this
machine for a prefix that lives elsewhere (the image's, ``/opt/NAME`` by default).

rattler links the locked records with ``alternative_target_prefix`` (placeholders get the
image's prefix; py-rattler 0.28), then, as an installation does: the locked URLs go back into
``conda-meta``, the wheels are installed with the image's interpreter in their scripts, the
history, marker, activation scripts and ``activate.env`` are written, and ``.pyc`` files are
compiled. What would name this machine's folder is made to name the image's prefix, and what
would name the time names ``SOURCE_DATE_EPOCH``: the folder's content is a function of the
lock alone.

Post-link scripts and a post-install script run on the installing machine, in the real
prefix; an image build has neither, so it refuses packages that carry them unless they are
turned off (``--no-link-scripts``), never skipping them silently.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import stat
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from lockship.builder.image.oci import ImageError
from lockship.builder.paths import host_platform
from lockship.stub.activation import (
    UNIX_TARGETS,
    activation_environment,
    activation_script,
    env_file_text,
    scripts_doing_more,
)
from lockship.stub.channel import locked_records
from lockship.stub.compat import remove_cache_tag
from lockship.stub.finish import write_history, write_marker
from lockship.stub.interpreter import python_package, python_path
from lockship.stub.linking import link_packages, restore_locked_urls
from lockship.stub.pyc import python_sources
from lockship.stub.shared.boundary import write_text_atomically
from lockship.stub.shared.manifest import Manifest
from lockship.stub.shared.progress import Reporter
from lockship.stub.staging import StagedPackages
from lockship.stub.wheels import install_wheel, python_files, record_wheels
from rattler.package_cache import PackageCache

#: what the image's PATH continues with when the base image sets none
DEFAULT_BASE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
#: fields of rattler's prefix records that name the folder the package was linked from
_LINKED_FROM = ("extracted_package_dir", "package_tarball_full_path")


@dataclass(frozen=True)
class ImageEnvironment:
    """An environment made in ``folder`` for ``prefix``."""

    folder: Path
    prefix: PurePosixPath
    #: what activation sets, for the image's prefix (PATH ends with the base's PATH)
    variables: dict[str, str]
    #: ``activate.d`` scripts that do more than set variables
    warnings: tuple[str, ...]


def check_image_policy(manifest: Manifest) -> None:
    """Refuse what an image cannot do as the installer would: run scripts."""
    options = manifest.options
    if options.link_scripts and options.link_script_packages:
        names = ", ".join(options.link_script_packages)
        raise ImageError(
            f"{names} carry post-link scripts, which run on the installing machine and cannot "
            "run for an image; build with --no-link-scripts to leave them out (the installer "
            "then says so too)"
        )
    if options.post_install:
        raise ImageError(
            "a --post-install script runs on the installing machine, and an image has none; "
            "leave post-install out of image builds"
        )


def make_environment(
    folder: Path,
    prefix: PurePosixPath,
    manifest: Manifest,
    archives: Mapping[str, Path],
    wheels: Sequence[tuple[str, Path, str]],
    *,
    work: Path,
    epoch: int,
    base_path: str,
    reporter: Reporter,
    package_cache: Path | None = None,
) -> ImageEnvironment:
    """Link ``manifest``'s packages (``archives``: entry -> verified archive) and install
    ``wheels`` (payload name, file, sha256) into ``folder`` for ``prefix``.

    ``package_cache`` is where rattler keeps the archives unpacked between builds (checked
    against each archive's sha256), so a rebuild links without unpacking them again."""
    check_image_policy(manifest)
    folder.mkdir(parents=True)
    records = locked_records(manifest.packages, work / "records")
    for record, package in zip(records, manifest.packages, strict=True):
        record.url = archives[package.entry].resolve().as_uri()
    cache = PackageCache(package_cache) if package_cache is not None else None
    staged = StagedPackages(work, records, cache, relocated=True)
    link_packages(
        staged,
        folder,
        manifest.platform,
        reporter,
        link_scripts=False,
        alternative_prefix=str(prefix),
    )
    restore_locked_urls(folder, manifest.packages)
    _forget_linked_from(folder)
    remove_cache_tag(folder)
    wheel_sources: list[Path] = []
    if wheels:
        interpreter = str(prefix / python_path(folder, manifest).relative_to(folder))
        installed = [
            install_wheel(path, sha256, folder, manifest, interpreter=interpreter)
            for _, path, sha256 in wheels
        ]
        record_wheels(folder, installed)
        wheel_sources = [p for w in installed for p in python_files(folder, w)]
    when = datetime.datetime.fromtimestamp(epoch, tz=datetime.UTC)
    write_history(
        folder, manifest, installer_name="lockship-image", when=when, shown_prefix=str(prefix)
    )
    write_marker(folder, manifest)
    for target in UNIX_TARGETS:
        # written for the image's prefix, not for this folder
        text = activation_script(Path(str(prefix)), target, manifest.platform)
        write_text_atomically(folder / target.file_name, text)
    doing_more = scripts_doing_more(folder)
    if doing_more and package_cache is not None:
        # such a script may change the package files it is run beside, which are the package
        # cache's own (hard links): give it copies
        _unshare_files(folder)
    variables = {
        key: value.replace(str(folder), str(prefix))
        for key, value in activation_environment(
            folder, manifest.platform, base_path=base_path
        ).items()
    }
    write_text_atomically(
        folder / "activate.env",
        env_file_text(
            {**variables, "PATH": variables["PATH"].replace(base_path, DEFAULT_BASE_PATH)}
        ),
    )
    if manifest.options.pyc:
        compile_for_image(folder, prefix, manifest, reporter, extra=wheel_sources)
    return ImageEnvironment(folder, prefix, variables, tuple(doing_more))


def _unshare_files(folder: Path) -> None:
    """Replace every file of ``folder`` that has other hard links by a copy of its own."""
    for root, _, files in os.walk(folder):
        for name in files:
            path = Path(root, name)
            st = path.lstat()
            if stat.S_ISREG(st.st_mode) and st.st_nlink > 1:
                partial = path.with_name(f".{name}.unshared")
                shutil.copy2(path, partial)
                os.replace(partial, path)


def _forget_linked_from(folder: Path) -> None:
    """Drop what names the folder rattler linked each package from (gone after the build,
    and different on every machine), as conda's records read after ``conda clean``."""
    for meta in sorted((folder / "conda-meta").glob("*.json")):
        record = json.loads(meta.read_text(encoding="utf-8"))
        for key in _LINKED_FROM:
            record.pop(key, None)
        link = record.get("link")
        if isinstance(link, dict):
            link.pop("source", None)
        meta.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def compile_for_image(
    folder: Path,
    prefix: PurePosixPath,
    manifest: Manifest,
    reporter: Reporter,
    extra: Sequence[Path] = (),
) -> int:
    """Compile the environment's ``.py`` files into hash-checked ``.pyc`` files (valid
    whatever the files' times), naming the image's paths; with the environment's own
    interpreter for this machine's platform, else with this one if it is the same version."""
    python = python_package(manifest)
    if python is None:
        return 0
    version = ".".join(python.version.split(".")[:2])
    interpreter: str | None = None
    if manifest.platform == host_platform() and python_path(folder, manifest).exists():
        interpreter = str(python_path(folder, manifest))
    elif f"{sys.version_info[0]}.{sys.version_info[1]}" == version:
        interpreter = sys.executable
    sources = python_sources(folder) + [p for p in extra if p.is_file()]
    if not sources:
        return 0
    if interpreter is None:
        reporter.message(
            f"WARNING: no .pyc files in the {manifest.platform} image: its python {version} "
            f"cannot run here and this builder's python is {sys.version_info[0]}."
            f"{sys.version_info[1]}"
        )
        return 0
    done = subprocess.run(
        [
            interpreter,
            "-Wi",
            "-m",
            "compileall",
            "-q",
            "-l",
            "-i",
            "-",
            "-s",
            str(folder),
            "-p",
            str(prefix),
            "--invalidation-mode",
            "checked-hash",
        ],
        input="\n".join(str(s) for s in sorted(sources)) + "\n",
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"},
    )
    if done.returncode != 0:
        reporter.message(
            "Some .py files did not compile (they still work): " + done.stdout.strip()[:500]
        )
    return len(sources)
