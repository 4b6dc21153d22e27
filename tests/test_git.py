"""Git URLs as pixi and pip lock them; a clone that stalls is given up."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from lockship.builder.errors import BuildError
from lockship.builder.pypi import git
from lockship.builder.pypi.git import GitSource, checkout, parse_git_location

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            f"git+https://github.com/o/r.git?rev=v1.0#{COMMIT}",
            GitSource("https://github.com/o/r.git", COMMIT, "v1.0"),
        ),
        (
            f"git+https://github.com/o/r?branch=main&subdirectory=pkg/sub#{COMMIT}",
            GitSource("https://github.com/o/r", COMMIT, "main", "pkg/sub"),
        ),
        (
            "git+https://github.com/o/r.git@v2#subdirectory=sub",
            GitSource("https://github.com/o/r.git", None, "v2", "sub"),
        ),
        (f"git+file:///tmp/repo@{COMMIT}", GitSource("file:///tmp/repo", COMMIT, COMMIT)),
        (
            "git+ssh://git@github.com/o/r.git",
            GitSource("ssh://git@github.com/o/r.git", None, None),
        ),
    ],
)
def test_git_locations(location: str, expected: GitSource) -> None:
    assert parse_git_location(location) == expected


def test_a_subdirectory_leaving_the_repository_is_refused() -> None:
    with pytest.raises(BuildError, match="leaves the repository"):
        parse_git_location(f"git+https://h/r.git?subdirectory=../x#{COMMIT}")


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A server on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []

    def accept() -> None:
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}/repo.git"
    listener.close()
    for connection in held:
        connection.close()


def test_a_clone_that_stalls_is_given_up(
    tmp_path: Path, silent_server: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(git, "GIT_TIMEOUT", 2)
    started = time.monotonic()
    with pytest.raises(BuildError, match=r"^git clone took longer than 2 s; check the network"):
        checkout(GitSource(silent_server, COMMIT), tmp_path / "checkout")
    assert time.monotonic() - started < 30
