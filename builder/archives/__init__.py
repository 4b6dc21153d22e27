"""Conda archives at build time: each one checked in full (``validate``) and what the installer
needs to know about them (``contents``)."""
