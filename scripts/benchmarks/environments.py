"""The environments the benchmark generates (scaled by ``--scale``, but for the fixed-size ones)."""

from __future__ import annotations

from lockship.builder.testing.synthetic import MB, EnvSpec


def env_specs(scale: float) -> dict[str, EnvSpec]:
    """``main`` (scaled), ``1mb`` (startup), ``22mb`` (file size against the peer), ``1gb``."""
    return {
        "main": EnvSpec(
            name="main",
            packages=40,
            archive_bytes=max(int(300 * MB * scale), 2 * MB),
            files=max(int(10_000 * scale), 200),
            binary_share=0.8,
            binary_file_share=0.1,
            text_placeholder_share=0.03,
            binary_placeholder_share=0.2,
            seed=1,
        ),
        "1mb": EnvSpec(
            name="1mb",
            packages=4,
            archive_bytes=1 * MB,
            files=60,
            binary_share=0.7,
            binary_file_share=0.15,
            text_placeholder_share=0.05,
            binary_placeholder_share=0.3,
            seed=2,
        ),
        # the small environment on which installer file sizes are compared with conda-ship's
        "22mb": EnvSpec(
            name="22mb",
            packages=8,
            archive_bytes=22 * MB,
            files=600,
            binary_share=0.7,
            binary_file_share=0.15,
            text_placeholder_share=0.05,
            binary_placeholder_share=0.3,
            seed=4,
        ),
        "1gb": EnvSpec(
            name="1gb",
            packages=4,
            archive_bytes=1000 * MB,
            files=200,
            binary_share=0.97,
            binary_file_share=0.4,
            text_placeholder_share=0.05,
            binary_placeholder_share=0.1,
            seed=3,
        ),
    }
