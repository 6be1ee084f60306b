"""Inference: the Predictor, its runtimes, detect and mask assembly, tiling, drawing, output
formats, tracking and the video pipeline (docs/inference.md maps the modules)."""
