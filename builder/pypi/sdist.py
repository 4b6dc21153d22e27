"""PyPI packages locked as sources (an sdist, a local project, a git URL) built into wheels.

Each source is brought to a folder (an sdist is downloaded, checked against the lock's sha256
and unpacked; a git URL is cloned and checked out at the locked commit; a local project is used
where it is) and built with pypa/build's :class:`~build.ProjectBuilder` in a fresh isolated
environment holding the build requirements the project declares (installed with pip, so the
builder machine may reach the package index; the installer never does).

Cache layout: ``<cache>/built/<key>/<wheel>``, ``key`` the sha256 of the source's hash (the
sdist's sha256, the git commit, or a digest of the local project's files) with this builder's
python and platform, whose tags a non-pure wheel carries. Backend output goes to
``<cache>/built/logs/<name>.log``, never to the terminal.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from build import BuildBackendException, BuildException, ProjectBuilder
from build.env import DefaultIsolatedEnv
from lockship.builder.errors import BuildError, ChecksumMismatch, FetchError
from lockship.builder.fetch import download_verified, local_path
from lockship.builder.inputs.model import LockedSource, location_url, url_file_name
from lockship.builder.paths import host_platform
from lockship.builder.pypi.git import GitSource, checkout, parse_git_location
from lockship.stub.shared.boundary import file_sha256
from packaging.utils import canonicalize_name, parse_wheel_filename
from rattler import Client

#: folders a local project's digest leaves out: tool state, not sources
_NOT_SOURCES = frozenset(
    {".git", ".hg", ".pixi", ".venv", "__pycache__", ".tox", ".nox", "node_modules"}
    | {".mypy_cache", ".pytest_cache", ".ruff_cache", "build", "dist"}
)


class SourceBuildError(BuildError):
    def __init__(self, source: LockedSource, reason: str, log: Path | None = None) -> None:
        self.source, self.reason, self.log = source, reason, log
        where = f"; the full log is {log}" if log else ""
        super().__init__(f"building a wheel of {source} failed: {reason}{where}")


@dataclass(frozen=True)
class BuiltWheel:
    source: LockedSource
    path: Path
    from_cache: bool


def build_sources(
    sources: Sequence[LockedSource],
    cache_dir: Path,
    *,
    base: Path,
    client: Client,
    retries: int,
    on_build: Callable[[str], None] = lambda _: None,
) -> list[BuiltWheel]:
    """A wheel for each source, from the cache or built now (one after another)."""
    return [
        _built(source, cache_dir, base=base, client=client, retries=retries, on_build=on_build)
        for source in sources
    ]


def _built(
    source: LockedSource,
    cache_dir: Path,
    *,
    base: Path,
    client: Client,
    retries: int,
    on_build: Callable[[str], None],
) -> BuiltWheel:
    if source.kind == "git":  # a locked commit is known before cloning
        git = parse_git_location(source.location)
        if git.commit is not None:
            hit = _cached(_cache_folder(cache_dir, f"git:{git.commit}:{git.subdirectory}"))
            if hit is not None:
                return BuiltWheel(source, hit, True)
    with _source_tree(source, cache_dir, base, client, retries) as (tree, digest):
        folder = _cache_folder(cache_dir, digest)
        hit = _cached(folder)
        if hit is not None:
            return BuiltWheel(source, hit, True)
        on_build(f"Building a wheel of {source.name} from source")
        log = cache_dir / "built" / "logs" / f"{canonicalize_name(source.name)}.log"
        return BuiltWheel(source, build_wheel(source, tree, folder, log), False)


def _cache_folder(cache_dir: Path, digest: str) -> Path:
    tag = f"{digest}|{sys.implementation.cache_tag}|{host_platform()}"
    return cache_dir / "built" / hashlib.sha256(tag.encode()).hexdigest()


def _cached(folder: Path) -> Path | None:
    wheels = sorted(folder.glob("*.whl")) if folder.is_dir() else []
    return wheels[0] if wheels else None


@contextmanager
def _source_tree(
    source: LockedSource, cache_dir: Path, base: Path, client: Client, retries: int
) -> Iterator[tuple[Path, str]]:
    """The folder to build ``source`` from, and the digest its wheel is cached by."""
    if source.kind == "path":
        tree = Path(source.location)
        tree = tree if tree.is_absolute() else (base / tree)
        if not (tree / "pyproject.toml").is_file() and not (tree / "setup.py").is_file():
            raise SourceBuildError(source, f"{tree} holds no pyproject.toml or setup.py")
        yield tree, f"path:{tree_digest(tree)}"
        return
    with tempfile.TemporaryDirectory(prefix="lockship-source-") as scratch:
        if source.kind == "git":
            git = parse_git_location(source.location)
            commit = _checked_out(source, git, Path(scratch) / "checkout")
            tree = Path(scratch) / "checkout" / git.subdirectory
            yield tree, f"git:{commit}:{git.subdirectory}"
            return
        archive = _fetch_sdist(source, cache_dir, base, client, retries)
        yield unpack_sdist(source, archive, Path(scratch)), f"sdist:{file_sha256(archive)}"


def _checked_out(source: LockedSource, git: GitSource, folder: Path) -> str:
    try:
        return checkout(git, folder)
    except BuildError as e:
        raise SourceBuildError(source, str(e)) from e


def _fetch_sdist(
    source: LockedSource, cache_dir: Path, base: Path, client: Client, retries: int
) -> Path:
    """The sdist's file, checked against the lock's sha256 before anything reads it."""
    url = location_url(source.location, base)
    name = url_file_name(url)
    expected = source.sha256

    def checked(path: Path) -> str:
        actual = file_sha256(path)
        if expected and actual != expected:
            raise ChecksumMismatch(name, expected, actual)
        return actual

    local = local_path(url)
    if local is not None:  # read and hashed at every build, like local wheels
        try:
            checked(local)
        except OSError as e:
            raise FetchError(url, e.strerror or str(e)) from e
        return local
    key = expected or hashlib.sha256(url.encode()).hexdigest()
    target = cache_dir / "sdists" / key / name
    if not target.is_file():
        asyncio.run(
            download_verified(
                client,
                url,
                cache_dir / "sdists",
                retries=retries,
                place=lambda part: (target, checked(part)),
            )
        )
    return target


def unpack_sdist(source: LockedSource, archive: Path, scratch: Path) -> Path:
    """Unpack an sdist safely into ``scratch``; the folder holding its ``pyproject.toml``."""
    into = scratch / "sdist"
    into.mkdir()
    try:
        if archive.name.lower().endswith(".zip"):
            with zipfile.ZipFile(archive) as zf:
                for name in zf.namelist():
                    parts = Path(name).parts
                    if name.startswith(("/", "\\")) or ".." in parts:
                        raise SourceBuildError(source, f"the sdist holds the unsafe path {name!r}")
                zf.extractall(into)
        else:
            with tarfile.open(archive) as tar:
                tar.extractall(into, filter="data")
    except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
        reason = f"{archive.name} is not a readable sdist ({type(e).__name__}: {e})"
        raise SourceBuildError(source, reason.splitlines()[0]) from e
    entries = list(into.iterdir())
    root = entries[0] if len(entries) == 1 and entries[0].is_dir() else into
    if not (root / "pyproject.toml").is_file() and not (root / "setup.py").is_file():
        raise SourceBuildError(source, f"{archive.name} holds no pyproject.toml or setup.py")
    return root


def tree_digest(tree: Path) -> str:
    """A digest of a local project's file names, modes and contents (tool state left out)."""
    digest = hashlib.sha256()
    for folder, dirs, files in os.walk(tree):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_SOURCES and not d.endswith(".egg-info"))
        for name in sorted(files):
            path = Path(folder) / name
            relative = path.relative_to(tree).as_posix()
            if path.is_symlink():
                content = str(path.readlink()).encode()
            else:
                content = file_sha256(path).encode()
            digest.update(f"{relative}\0{os.access(path, os.X_OK)}\0".encode() + content + b"\0")
    return digest.hexdigest()


#: seconds a build backend's hook (building the wheel, say) may take
BUILD_TIMEOUT = 60 * 60


def build_wheel(source: LockedSource, tree: Path, folder: Path, log: Path) -> Path:
    """Build ``tree`` into a wheel in ``folder`` (written only once it is complete)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(f"building {source} in {tree}\n", encoding="utf-8")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=folder.parent) as out:
        try:
            with DefaultIsolatedEnv() as env:
                builder = ProjectBuilder.from_isolated_env(env, tree, runner=_logged(log))
                _install(source, env, builder.build_system_requires, log)
                _install(source, env, builder.get_requires_for_build("wheel"), log)
                built = Path(builder.build("wheel", out))
        except (BuildException, BuildBackendException) as e:
            reason = _last_line(log) or str(e)
            if isinstance(getattr(e, "exception", None), subprocess.TimeoutExpired):
                reason = f"its build backend took longer than {BUILD_TIMEOUT} s"
            raise SourceBuildError(source, reason, log) from e
        except OSError as e:
            raise SourceBuildError(source, e.strerror or str(e), log) from e
        name = parse_wheel_filename(built.name)[0]
        if name != canonicalize_name(source.name):
            raise SourceBuildError(source, f"it built a wheel of another package: {built.name}")
        final = folder / built.name
        folder.mkdir(parents=True, exist_ok=True)
        os.replace(built, final)
    return final


def _install(
    source: LockedSource, env: DefaultIsolatedEnv, requirements: Iterable[str], log: Path
) -> None:
    """Install build requirements into the isolated environment, pip's output to the log."""
    wanted = sorted(requirements)
    if not wanted:
        return
    try:
        env.install(wanted)
    except subprocess.CalledProcessError as e:
        output = (e.stderr or e.stdout or b"").decode("utf-8", "replace")
        with log.open("a", encoding="utf-8") as f:
            f.write(output)
        lines = [line for line in output.splitlines() if line.strip()]
        reason = lines[-1].strip() if lines else f"pip exited with {e.returncode}"
        raise SourceBuildError(
            source, f"installing its build requirements {', '.join(wanted)} failed: {reason}", log
        ) from e


def _logged(log: Path) -> Callable[..., None]:
    """A pyproject-hooks runner writing the backend's output to ``log``."""

    def run(
        cmd: Sequence[str], cwd: str | None = None, extra_environ: Mapping[str, str] | None = None
    ) -> None:
        env = {**os.environ, **(extra_environ or {})}
        with log.open("a", encoding="utf-8") as out:
            out.flush()
            subprocess.run(
                cmd,
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=BUILD_TIMEOUT,
            )

    return run


def _last_line(log: Path) -> str:
    try:
        lines = [ln.strip() for ln in log.read_text(encoding="utf-8").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:300] if lines else ""
