"""Container images straight from the lock: the environment the installer makes, laid out as
an OCI image (one layer per package, reproducible), on a base image, written as an OCI layout
archive and pushed to a registry without any container engine."""
