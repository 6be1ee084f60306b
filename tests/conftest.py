import os
from pathlib import Path

import pytest
import torch

from tests.paths import ROOT

# The larger shared data set that data/ was cut from: $YOLACT_LITE_SHARED_DATA, else
# ../shared/data beside the checkout (the rule of benchmarks/_common.py, kept here so that the
# tests' set-up imports no benchmark code).
SHARED_DATA = Path(os.environ.get("YOLACT_LITE_SHARED_DATA", ROOT.parent / "shared" / "data"))

# Deterministic, modest CPU use in tests (CI has 2 cores).
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(autouse=True, scope="session")
def _model_cache(tmp_path_factory):
    """Converted OpenVINO models go to a folder of this session, not the user's cache."""
    previous = os.environ.get("YOLACT_LITE_CACHE")
    os.environ["YOLACT_LITE_CACHE"] = str(tmp_path_factory.mktemp("yolact_lite_cache"))
    yield
    if previous is None:
        os.environ.pop("YOLACT_LITE_CACHE", None)
    else:
        os.environ["YOLACT_LITE_CACHE"] = previous


# Tests that need the shared data set skip, saying why, when it is absent.


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "coco_mini").is_dir():
        pytest.skip(f"the shared data set is not at {SHARED_DATA} (set YOLACT_LITE_SHARED_DATA)")
    return SHARED_DATA
