"""Locked PyPI packages: the file name a lock's URL or path stands for."""

from __future__ import annotations

import pytest
from lockship.builder.inputs.model import (
    LockedSource,
    LockedWheel,
    locked_pypi_package,
    url_file_name,
)


@pytest.mark.parametrize(
    ("location", "expected"),
    [
        (
            "https://download.example.invalid/whl/cu121/torch-2.3.0%2Bcu121-cp311-cp311-linux_x86_64.whl",
            "torch-2.3.0+cu121-cp311-cp311-linux_x86_64.whl",
        ),
        (
            "https://files.example.invalid/a/hello-2.0-py3-none-any.whl?token=s3cret#sha256=00",
            "hello-2.0-py3-none-any.whl",
        ),
        ("file:///srv/wheels/my%20pkg-1.0.tar.gz", "my pkg-1.0.tar.gz"),
        ("./dist/local_wheel-2.0+local-py3-none-any.whl", "local_wheel-2.0+local-py3-none-any.whl"),
        ("../sdists/an-sdist-0.5.tar.gz#sha256=ab", "an-sdist-0.5.tar.gz"),
    ],
)
def test_url_file_name_decodes_and_drops_query_and_fragment(location: str, expected: str) -> None:
    assert url_file_name(location) == expected


def test_an_encoded_wheel_with_a_query_is_a_wheel_under_its_real_name() -> None:
    location = "https://example.invalid/hello-2.0%2Bcu121-py3-none-any.whl?x=1"
    wheel = locked_pypi_package("hello", "2.0+cu121", location, None)
    assert isinstance(wheel, LockedWheel)
    assert wheel.file_name == "hello-2.0+cu121-py3-none-any.whl"
    sdist = locked_pypi_package("an", "0.5", "https://example.invalid/an-0.5.tar.gz?x=1", None)
    assert isinstance(sdist, LockedSource) and sdist.kind == "sdist"
