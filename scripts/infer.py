#!/usr/bin/env python3
"""Kept so that older instructions work: the same as ``yolact-lite predict``."""
from yolact_lite.cli import run_cli
from yolact_lite.cli.predict import main

if __name__ == "__main__":
    run_cli(main)
