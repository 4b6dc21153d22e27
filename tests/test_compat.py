"""Each workaround in ``stub/compat.py`` against the behaviour it works around: when a release
of rattler or tqdm fixes one, its test here fails, and the workaround can go."""

from __future__ import annotations

import asyncio
import errno
import os
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import rattler
import tqdm as tqdm_module
from lockship.stub import compat
from lockship.stub.compat import (
    PLACEHOLDER_CERTIFICATE,
    disk_error,
    one_line,
    remove_cache_tag,
)
from rattler import Channel, RepoData, Subdir
from rattler.package_streaming import extract
from rattler.shell import ActivationVariables, PathModificationBehavior, Shell, activate

from tests.factories import index_channel, write_conda_package


def _records(channel: Path) -> list[rattler.RepoDataRecord]:
    index_channel(channel)
    repodata = RepoData.from_path(channel / "noarch" / "repodata.json")
    return list(repodata.into_repo_data(Channel(channel.as_uri())))


def test_rattler_errors_still_come_as_chains(tmp_path: Path) -> None:
    archive = write_conda_package(tmp_path / "channel", "gone", "1.0", files={"a.txt": "a"})
    records = _records(tmp_path / "channel")
    archive.unlink()
    try:
        asyncio.run(rattler.install(records, tmp_path / "env", cache_dir=tmp_path / "cache"))
    except Exception as e:
        raised = e
    else:
        raise AssertionError("installing a missing archive succeeded")
    assert "\nCaused by: " in str(raised)  # the workaround's reason
    assert one_line(raised) == (
        "failed to fetch gone-1.0-0.conda: No such file or directory (os error 2)"
    )


def test_rattler_disk_errors_still_lose_their_errno(tmp_path: Path) -> None:
    archive = write_conda_package(tmp_path / "channel", "a", "1.0", files={"a.txt": "a"})
    (tmp_path / "file").write_text("not a folder")
    try:
        extract(archive, tmp_path / "file" / "unpacked")
    except OSError as e:
        raised = e
    else:
        raise AssertionError("extracting below a file succeeded")
    assert raised.errno is None and "(os error 20)" in str(raised)
    rebuilt = disk_error(raised)
    assert rebuilt is not None and rebuilt.errno == errno.ENOTDIR


def test_rattler_still_tags_an_installed_prefix_as_a_cache(tmp_path: Path) -> None:
    write_conda_package(tmp_path / "channel", "a", "1.0", files={"a.txt": "a"})
    prefix = tmp_path / "env"
    asyncio.run(rattler.install(_records(tmp_path / "channel"), prefix, cache_dir=tmp_path / "c"))
    assert (prefix / "CACHEDIR.TAG").is_file()
    remove_cache_tag(prefix)
    assert not (prefix / "CACHEDIR.TAG").exists()


def test_rattler_quotes_activation_values_itself(tmp_path: Path) -> None:
    """Earlier lockship quoted rattler's bash activation lines; py-rattler 0.28 quotes a
    prefix with a space itself, so that workaround went. This keeps it gone only while true."""
    prefix = tmp_path / "my env"
    (prefix / "etc" / "conda" / "activate.d").mkdir(parents=True)
    (prefix / "etc" / "conda" / "activate.d" / "hook.sh").write_text("true\n")
    variables = ActivationVariables(
        current_path=["${PATH}"], path_modification_behavior=PathModificationBehavior.Replace
    )
    lines = activate(prefix, variables, Shell.bash, platform=Subdir("linux-64")).script
    assert f"export CONDA_PREFIX='{prefix}'" in lines.splitlines()
    assert f". '{prefix}/etc/conda/activate.d/hook.sh'" in lines.splitlines()


def test_tqdm_still_starts_a_monitor_thread() -> None:
    before = {t.name for t in threading.enumerate()}
    saved = tqdm_module.tqdm.monitor_interval
    tqdm_module.tqdm.monitor_interval = 10
    try:
        with open("/dev/null", "w") as sink, tqdm_module.tqdm(total=1, file=sink):
            started = {t.name for t in threading.enumerate()} - before
    finally:
        if tqdm_module.tqdm.monitor is not None:
            tqdm_module.tqdm.monitor.exit()
            tqdm_module.tqdm.monitor = None
        tqdm_module.tqdm.monitor_interval = saved
    assert started, "tqdm no longer starts a monitor thread"


#: ends with os._exit, as the installer does (see "teardown crashes" in compat's docstring)
_INSTALL_NOTHING = (
    "import asyncio, os, rattler; asyncio.run(rattler.install([], {prefix!r})); os._exit(0)"
)


@pytest.mark.skipif(sys.platform != "linux", reason="rattler reads the CA store this way on Linux")
def test_rattler_install_panics_without_ca_certificates(tmp_path: Path) -> None:
    """The reason for tls_roots_for_rattler: no CA certificates, no install, even offline."""
    empty = tmp_path / "empty.pem"
    empty.write_text("")
    (tmp_path / "certs").mkdir()
    env = {**os.environ, "SSL_CERT_FILE": str(empty), "SSL_CERT_DIR": str(tmp_path / "certs")}
    code = _INSTALL_NOTHING.format(prefix=str(tmp_path / "env"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "No CA certificates were loaded" in done.stderr
    env["SSL_CERT_FILE"] = str(tmp_path / "placeholder.pem")
    Path(env["SSL_CERT_FILE"]).write_text(PLACEHOLDER_CERTIFICATE)
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_placeholder_certificate_is_given_only_where_none_is(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    monkeypatch.setattr(compat, "CA_LOCATIONS", (str(tmp_path / "none.crt"),))
    with compat.tls_roots_for_rattler(tmp_path):
        given = Path(os.environ["SSL_CERT_FILE"])
        assert given.parent == tmp_path
        assert ssl.PEM_cert_to_DER_cert(given.read_text())  # a certificate, parseable
    assert "SSL_CERT_FILE" not in os.environ and not given.exists()
    (tmp_path / "none.crt").write_text(PLACEHOLDER_CERTIFICATE)  # a machine that has some
    with compat.tls_roots_for_rattler(tmp_path):
        assert "SSL_CERT_FILE" not in os.environ


def test_variables_naming_no_certificates_are_set_aside_while_rattler_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A stale ``$SSL_CERT_FILE`` (a copied profile, a chroot) makes rattler panic even where
    the system has certificates: the placeholder stands in, and the variables come back."""
    (tmp_path / "system.crt").write_text(PLACEHOLDER_CERTIFICATE)
    monkeypatch.setattr(compat, "CA_LOCATIONS", (str(tmp_path / "system.crt"),))
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "gone.crt"))
    monkeypatch.setenv("SSL_CERT_DIR", str(tmp_path / "gone"))
    with compat.tls_roots_for_rattler(tmp_path):
        assert os.environ["SSL_CERT_FILE"] == str(tmp_path / "placeholder-ca.pem")
        assert "SSL_CERT_DIR" not in os.environ
    assert os.environ["SSL_CERT_FILE"] == str(tmp_path / "gone.crt")
    assert os.environ["SSL_CERT_DIR"] == str(tmp_path / "gone")
    assert not (tmp_path / "placeholder-ca.pem").exists()
    monkeypatch.setenv("SSL_CERT_FILE", str(tmp_path / "system.crt"))  # one that has some
    monkeypatch.delenv("SSL_CERT_DIR")
    with compat.tls_roots_for_rattler(tmp_path):
        assert os.environ["SSL_CERT_FILE"] == str(tmp_path / "system.crt")


@pytest.mark.skipif(sys.platform != "linux", reason="rattler reads the CA store this way on Linux")
def test_rattler_install_panics_with_a_certificate_variable_naming_nothing(tmp_path: Path) -> None:
    """Why the variables are checked, not only the system's locations."""
    env = {k: v for k, v in os.environ.items() if k != "SSL_CERT_DIR"}
    env["SSL_CERT_FILE"] = str(tmp_path / "gone.crt")
    code = _INSTALL_NOTHING.format(prefix=str(tmp_path / "env"))
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert done.returncode != 0 and "panicked" in done.stderr
