"""Workarounds for what py-rattler, PyInstaller and tqdm do, in one place.

Each one names the version it was seen with; ``tests/test_compat.py`` has a test per workaround
that checks the behaviour is still there, so it fails (and the workaround can go) once a new
release fixes it.

- **rattler's error chains** (py-rattler 0.28): errors carry their causes as extra lines
  (``X\\nCaused by: Y``); :func:`one_line` keeps the first and the last.
- **rattler's disk errors** (py-rattler 0.28): ``package_streaming.extract`` raises an OSError
  whose errno is None and whose text ends in ``(os error 28)``; :func:`disk_error` rebuilds it.
- **CACHEDIR.TAG** (py-rattler 0.28): ``rattler.install`` tags the prefix as a cache, so backup
  tools would skip an installed environment; :func:`remove_cache_tag`.
- **tqdm's monitor thread** (tqdm 4.67): the first bar starts a thread, and the Linux installer
  forks its unpacking workers while a bar is open; :func:`without_tqdm_monitor`.
- **no CA certificates** (py-rattler 0.28): ``rattler.install`` builds an HTTPS client even
  for local files, and it panics ("No CA certificates were loaded from the system") on a Linux
  machine without a CA bundle (a minimal container); :func:`tls_roots_for_rattler` gives it a
  placeholder certificate there. Nothing is downloaded, so the certificate is never used.
- **teardown crashes** (py-rattler 0.28): rattler's runtime threads can crash the interpreter's
  teardown (about one exit in ten under load turned into a segfault or abort instead of the exit
  code already reported), so both entry points end with ``os._exit``
  (:func:`lockship.stub.shared.boundary.end_process`). Seen under load only; no cheap
  reproduction, so no test: try removing it when py-rattler changes its runtime.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

_OS_ERROR = re.compile(r"\(os error (\d+)\)")


def one_line(error: Exception) -> str:
    """Shorten rattler's error chains ("X\\nCaused by: Y") to their first and last lines."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    if len(lines) == 1:
        return lines[0]
    return f"{lines[0]}: {lines[-1].removeprefix('Caused by:').strip()}"


def disk_error(error: Exception) -> OSError | None:
    """The disk error behind a failed extraction, if that is what it was (errno restored)."""
    if not isinstance(error, OSError):
        return None
    if error.errno is not None:
        return error
    found = _OS_ERROR.search(str(error))
    if found is None:
        return None
    number = int(found[1])
    return OSError(number, os.strerror(number))


#: the variables that, when set, replace the system's locations for rattler
CA_VARIABLES = ("SSL_CERT_FILE", "SSL_CERT_DIR")
#: where rustls-native-certs (through openssl-probe) finds a Linux machine's CA certificates
CA_LOCATIONS = (
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
    "/etc/ssl/cert.pem",
    "/etc/pki/tls/cacert.pem",
    "/etc/ssl/certs",
    "/etc/pki/tls/certs",
)
#: a self-signed certificate whose key was thrown away: something for rattler's client to load
PLACEHOLDER_CERTIFICATE = """\
-----BEGIN CERTIFICATE-----
MIIBuTCCAV+gAwIBAgIUexSN2VIHVseeQV81XqtZDqHjGvAwCgYIKoZIzj0EAwIw
MTEvMC0GA1UEAwwmbG9ja3NoaXAgb2ZmbGluZSBpbnN0YWxsZXIgcGxhY2Vob2xk
ZXIwIBcNMjYxMjA3MTM0OTE3WhgPMjEyNjExMTMxMzQ5MTdaMDExLzAtBgNVBAMM
JmxvY2tzaGlwIG9mZmxpbmUgaW5zdGFsbGVyIHBsYWNlaG9sZGVyMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAEgoH9kA74OZ2eYn0t+JrBOjKfMJLDqz2rsy/UR36f
RLUZfA5UeShZfibptqFmQ6JnbZDWeWH2sJFK9H0JUjW7OaNTMFEwHQYDVR0OBBYE
FIRd/Nl8hNvHstknXpv8SRxFW5WUMB8GA1UdIwQYMBaAFIRd/Nl8hNvHstknXpv8
SRxFW5WUMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDSAAwRQIgAVRxzPxC
nHD2pPFBCvBUyahD4hUOpTNHdM2h975Nx2kCIQC2dtQgm5idQ9QZmy7JhRLMdVXk
eGNeZQTWDLulx2rLDA==
-----END CERTIFICATE-----
"""


@contextlib.contextmanager
def tls_roots_for_rattler(folder: Path) -> Iterator[None]:
    """While the block runs, ``$SSL_CERT_FILE`` names a placeholder certificate (written into
    ``folder``) if rattler would find no CA certificates on this Linux machine.

    rattler reads ``$SSL_CERT_FILE``/``$SSL_CERT_DIR`` when either is set, and the system's
    locations otherwise; one naming a missing or empty file or folder makes it panic as surely
    as a machine without certificates (a copied shell profile, a chroot), so those are set
    aside for the block too and given back afterwards.
    """
    named = {key: value for key in CA_VARIABLES if (value := os.environ.get(key))}
    if named:
        found = all(_has_certificates(Path(p)) for p in named.values())
    else:
        found = any(_has_certificates(Path(p)) for p in CA_LOCATIONS)
    if sys.platform != "linux" or found:
        yield
        return
    placeholder = folder / "placeholder-ca.pem"
    placeholder.write_text(PLACEHOLDER_CERTIFICATE)
    for key in named:
        del os.environ[key]
    os.environ["SSL_CERT_FILE"] = str(placeholder)
    try:
        yield
    finally:
        os.environ.pop("SSL_CERT_FILE", None)
        os.environ.update(named)
        placeholder.unlink(missing_ok=True)


def _has_certificates(path: Path) -> bool:
    try:
        return path.stat().st_size > 0 if path.is_file() else any(path.iterdir())
    except OSError:
        return False


def remove_cache_tag(prefix: Path) -> None:
    """An installed environment should be backed up: drop the tag rattler leaves."""
    (prefix / "CACHEDIR.TAG").unlink(missing_ok=True)


def without_tqdm_monitor() -> None:
    """No monitor thread for tqdm's bars (set before the first bar is made)."""
    from tqdm import tqdm

    tqdm.monitor_interval = 0
