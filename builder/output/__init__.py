"""What a build writes: the installer file (``installer``, ``templates/``), its extras (license,
post-install script), delta payloads, signing, ``SHA256SUMS`` and the SBOM."""
