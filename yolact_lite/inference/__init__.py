"""Inference: the Predictor, its runtimes, detect and mask assembly, tiling, drawing,
tracking and the video pipeline (docs/inference.md maps the modules).

Layer: inference.  May import the core, ``model``, ``ops``, ``data``, ``loss`` and
``checkpoint``; never ``evaluation``, ``engine`` or ``cli``.
"""
