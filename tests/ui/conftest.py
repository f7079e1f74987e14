"""Browser tests run a real executor: reuse the image fixtures of tests/executor."""

from tests.executor.conftest import base_image, podman_runtime, sample_images  # noqa: F401
