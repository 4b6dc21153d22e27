"""Git URLs of locked PyPI packages, and checking one out at its locked commit.

pixi writes ``git+https://host/repo.git?rev=v1&subdirectory=sub#<commit>`` (``branch=`` and
``tag=`` as well), pip ``git+https://host/repo.git@<rev>#subdirectory=sub``; both are read.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from lockship.builder.errors import BuildError

_COMMIT = re.compile(r"[0-9a-f]{40}([0-9a-f]{24})?")

#: seconds one git command may take (a clone of a large repository on a slow link included);
#: git itself never gives up on a stalled connection
GIT_TIMEOUT = 30 * 60


@dataclass(frozen=True)
class GitSource:
    url: str  # what git clones, without ``git+``, query or fragment
    #: the locked commit, or None when the lock names only a branch, tag or short rev
    commit: str | None
    rev: str | None = None
    subdirectory: str = ""

    @property
    def target(self) -> str:
        return self.commit or self.rev or "HEAD"


def parse_git_location(location: str) -> GitSource:
    if not location.startswith("git+"):
        raise BuildError(f"{location} is not a git URL (git+https://..., git+file://...)")
    parts = urlsplit(location[len("git+") :])
    query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
    fragment = parts.fragment
    commit = fragment.lower() if _COMMIT.fullmatch(fragment.lower()) else None
    options = {} if commit else {k: v[-1] for k, v in parse_qs(fragment).items()}
    path, rev = parts.path, query.get("rev") or query.get("tag") or query.get("branch")
    if "@" in path.rsplit("/", 1)[-1]:  # pip's repo.git@rev
        path, _, at_rev = path.rpartition("@")
        rev = rev or at_rev
    if commit is None and rev and _COMMIT.fullmatch(rev.lower()):
        commit = rev.lower()
    subdirectory = (query.get("subdirectory") or options.get("subdirectory") or "").strip("/")
    if ".." in Path(subdirectory).parts:
        raise BuildError(f"{location}: the subdirectory {subdirectory!r} leaves the repository")
    url = urlunsplit((parts.scheme, parts.netloc, path, "", ""))
    return GitSource(url, commit, rev, subdirectory)


def _git(*args: str, cwd: Path | None = None) -> str:
    env = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "true"}
    try:
        done = subprocess.run(
            ["git", *args],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            timeout=GIT_TIMEOUT,
        )
    except FileNotFoundError as e:
        raise BuildError("git is not installed; install git to build PyPI git sources") from e
    except subprocess.TimeoutExpired as e:
        raise BuildError(
            f"git {args[0]} took longer than {GIT_TIMEOUT} s; check the network and the "
            "repository's URL"
        ) from e
    if done.returncode != 0:
        lines = [ln.strip() for ln in done.stderr.splitlines() if ln.strip()]
        raise BuildError(f"git {args[0]} failed: {lines[-1] if lines else done.returncode}")
    return done.stdout.strip()


def checkout(source: GitSource, folder: Path) -> str:
    """Clone ``source`` into ``folder`` at its locked commit; the commit checked out."""
    _git("clone", "--quiet", "--no-checkout", source.url, str(folder))
    try:
        _git("checkout", "--quiet", "--detach", source.target, cwd=folder)
    except BuildError:
        if source.commit is None:
            raise
        # a commit no branch points at any more: ask for it by name
        _git("fetch", "--quiet", "origin", source.commit, cwd=folder)
        _git("checkout", "--quiet", "--detach", source.commit, cwd=folder)
    head = _git("rev-parse", "HEAD", cwd=folder)
    if source.commit and head != source.commit:
        raise BuildError(f"{source.url} checked out {head}, but the lock says {source.commit}")
    if (folder / ".gitmodules").is_file():
        _git("submodule", "update", "--quiet", "--init", "--recursive", cwd=folder)
    if not (folder / source.subdirectory).is_dir():
        raise BuildError(f"{source.url} at {head} has no folder {source.subdirectory}")
    return head
