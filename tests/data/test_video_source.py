"""data/video_source.py: file descriptor 2 is silenced only inside the block and always restored."""

from __future__ import annotations

import os
import sys

import pytest

from yolact_lite.data.video_source import is_camera_source, is_stream_source, stderr_silenced


def test_stderr_silenced_hides_fd_2_and_restores_it_after_an_exception(capfd):
    print("before", file=sys.stderr)  # pending in Python's buffer: flushed, not lost
    with pytest.raises(RuntimeError, match="inside"):
        with stderr_silenced():
            os.write(2, b"library noise\n")
            raise RuntimeError("inside")
    os.write(2, b"after\n")
    assert capfd.readouterr().err == "before\nafter\n"


def test_source_kinds():
    assert is_camera_source(0) and is_camera_source(" 12 ") and not is_camera_source("12.avi")
    assert is_stream_source("rtsp://cam/1") and is_stream_source("http://127.0.0.1:8/v.mp4")
    assert not is_stream_source("clip.avi") and not is_stream_source("C:/videos/clip.avi")
