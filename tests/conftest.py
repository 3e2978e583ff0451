import os

import pytest
import torch

os.environ.setdefault("OMP_NUM_THREADS", "1")
# One intra-op thread per test process: CI runs two xdist workers on two cores, and the small tensors
# here gain nothing from threads (two threads per worker measured several times slower under load).
torch.set_num_threads(1)

try:
    from hypothesis import HealthCheck, settings

    settings.register_profile(
        "ci", max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True
    )
    settings.register_profile("dev", max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
except ImportError:  # pragma: no cover
    pass


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)
