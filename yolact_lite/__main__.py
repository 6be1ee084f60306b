"""``python -m yolact_lite COMMAND ...`` (also ``torchrun ... -m yolact_lite train ...``)."""

from .cli.main import main

main()
