"""The builder's HTTP client options (the requests themselves are tested in test_inputs.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import rattler
from lockship.builder.errors import UsageError
from lockship.builder.network import (
    AUTH_FILE_ENV,
    NetworkOptions,
    make_client,
    parse_mirror,
    rattler_config_toml,
)


def test_an_auth_file_does_not_change_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(AUTH_FILE_ENV, raising=False)
    auth = tmp_path / "auth.json"
    auth.write_text("{}")
    make_client(NetworkOptions(auth_file=auth), timeout=5)
    assert AUTH_FILE_ENV not in os.environ


def test_options_become_one_rattler_config(tmp_path: Path) -> None:
    auth = tmp_path / 'my "auth".json'
    auth.write_text("{}")
    config_file = tmp_path / "config.toml"
    config_file.write_text('[mirrors]\n"https://a.example/x" = ["https://b.example/x"]\n')
    options = NetworkOptions(
        auth_file=auth,
        mirrors=dict([(o, [m]) for o, m in [parse_mirror("https://c.example=https://d.example")]]),
        config=config_file,
    )
    config = rattler.Config.from_toml(rattler_config_toml(options))
    assert config.authentication_override_file == auth.resolve()
    assert config.mirrors == {
        "https://a.example/x/": ["https://b.example/x/"],
        "https://c.example/": ["https://d.example/"],
    }


def test_a_missing_auth_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match=r"the auth file .* does not exist"):
        make_client(NetworkOptions(auth_file=tmp_path / "nope.json"), timeout=5)
