"""The training loss: prior matching and the YOLACT loss terms (:mod:`.criterion`).

Layer: data / loss / checkpoint.  May import the core, ``model``, ``ops`` and ``data`` (class
statistics); never ``inference``, ``evaluation``, ``engine`` or ``cli``.
"""

from .criterion import YolactLoss, build_criterion, match

__all__ = ["YolactLoss", "build_criterion", "match"]
