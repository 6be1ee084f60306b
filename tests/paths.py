"""Where the tests find files.  Test modules sit at different depths (tests/<layer>/), so
they take these constants instead of counting ``Path(__file__).parent`` steps."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the checkout
DATA = ROOT / "data"  # data bundled with the repository (coco_mini, photos, models, video)
FIXTURES = Path(__file__).resolve().parent / "fixtures"  # files only the tests read
