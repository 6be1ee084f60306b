import os
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = ROOT / "data" / "coco_mini"

# Deterministic, modest CPU use in tests (CI has 2 cores).
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT
