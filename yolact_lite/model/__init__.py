"""Network modules: backbones, FPN, heads, priors and the assembled YOLACT model."""

from .priors import make_priors
from .yolact import Yolact, build_model, count_parameters

__all__ = ["Yolact", "build_model", "count_parameters", "make_priors"]
