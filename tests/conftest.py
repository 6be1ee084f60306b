import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "data" / "coco_mini"

# Deterministic, modest CPU use in tests (CI has 2 cores).
torch.set_num_threads(min(2, os.cpu_count() or 1))


# The larger shared data set (the source of data/): YOLACT_LITE_SHARED_DATA, else ../shared/data
# beside the checkout. Tests that need it skip, saying why, when it is absent.
SHARED_DATA = Path(os.environ.get("YOLACT_LITE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not (SHARED_DATA / "coco_mini").is_dir():
        pytest.skip(f"the shared data set is not at {SHARED_DATA} (set YOLACT_LITE_SHARED_DATA)")
    return SHARED_DATA
