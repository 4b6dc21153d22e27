"""Which wheels fit a target's locked python and conda platform."""

from __future__ import annotations

import pytest
from lockship.builder.pypi.tags import fits, is_pure

CASES = [
    ("a-1.0-py3-none-any.whl", (3, 11), "linux-64", True),
    ("a-1.0-py2.py3-none-any.whl", (3, 12), "win-64", True),
    ("a-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", (3, 11), "linux-64", True),
    ("a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", (3, 12), "linux-64", False),
    ("a-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", (3, 11), "linux-aarch64", False),
    ("a-1.0-cp38-abi3-manylinux2014_aarch64.whl", (3, 12), "linux-aarch64", True),
    ("a-1.0-cp312-cp312-macosx_11_0_arm64.whl", (3, 12), "osx-arm64", True),
    ("a-1.0-cp312-cp312-macosx_10_9_universal2.whl", (3, 12), "osx-64", True),
    ("a-1.0-cp312-cp312-macosx_10_9_x86_64.whl", (3, 12), "osx-arm64", False),
    ("a-1.0-cp312-cp312-win_amd64.whl", (3, 12), "win-64", True),
    ("a-1.0-cp312-cp312-win_amd64.whl", (3, 12), "linux-64", False),
    ("a-1.0-cp312-cp312-musllinux_1_2_x86_64.whl", (3, 12), "linux-64", False),
    ("a-1.0-py3-none-linux_x86_64.whl", (3, 11), "linux-64", True),
]


@pytest.mark.parametrize(("name", "python", "platform", "expected"), CASES)
def test_fits(name: str, python: tuple[int, int], platform: str, expected: bool) -> None:
    assert fits(name, python, platform) is expected


def test_pure_wheels_are_those_for_any_platform() -> None:
    assert is_pure("a-1.0-py3-none-any.whl")
    assert is_pure("a-1.0-py2.py3-none-any.whl")
    assert not is_pure("a-1.0-cp38-abi3-manylinux2014_aarch64.whl")
    assert not is_pure("a-1.0-py3-none-linux_x86_64.whl")
