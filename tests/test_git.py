"""Git URLs as pixi and pip lock them."""

from __future__ import annotations

import pytest
from lockship.builder.errors import BuildError
from lockship.builder.pypi.git import GitSource, parse_git_location

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
