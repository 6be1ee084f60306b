"""Network modules: backbones, FPN, heads, priors and the assembled YOLACT model; test-support
models (:mod:`.testing`).

Layer: model / ops.  May import the core only (and ``ops``); never ``data``, ``loss``,
``checkpoint`` or anything above.
"""

from .priors import make_priors
from .yolact import Yolact, build_model, count_parameters

__all__ = ["Yolact", "build_model", "count_parameters", "make_priors"]
