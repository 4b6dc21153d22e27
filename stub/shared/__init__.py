"""The door between the wings: the only part of the installer the builder may import. The
payload format, the manifest, the process boundary (``ERROR:`` line, logs, atomic writes,
hashes, ``SHA256SUMS``) and the progress reporters."""
