"""The sample-agent tests reuse the session's podman runtime and image fixtures."""

from tests.executor.conftest import (  # noqa: F401
    base_image,
    misbehave_image,
    podman_runtime,
    sample_images,
)
