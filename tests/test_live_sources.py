"""Live sources (stream URLs, cameras): open timeout, reconnect with backoff, newest frame.

A local HTTP server on 127.0.0.1 serves the bundled ``data/video/vtest_150.avi`` (FFmpeg reads
an AVI progressively over HTTP) and misbehaves on purpose: it drops the connection or stalls
part-way through the first request, or never answers at all. Timeouts are 1-2 s so the file
stays quick."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from pathlib import Path

import pytest

from yolact_lite.data.video_source import LivePolicy, LiveSource, open_video
from yolact_lite.errors import DataError

ROOT = Path(__file__).resolve().parent.parent
VIDEO = (ROOT / "data" / "video" / "vtest_150.avi").read_bytes()
FRAMES = 150
CUT = int(len(VIDEO) * 0.4)  # the first connection of /drop and /stall ends here (61 frames)
TINY = ["model.input_size=128", "model.anchors.scales=[[5],[11],[22],[44],[89]]"]


class _Handler(http.server.BaseHTTPRequestHandler):
    """``/full.avi``: the whole file; ``/drop.avi``: first request cut at 40 %; ``/stall.avi``:
    first request sends 40 % and then nothing until the server closes."""

    def log_message(self, *args):  # no request log in the test output
        pass

    def do_GET(self):
        server = self.server
        with server.lock:
            server.requests[self.path] = server.requests.get(self.path, 0) + 1
            first = server.requests[self.path] == 1
        self.send_response(200)
        self.send_header("Content-Type", "video/x-msvideo")
        self.send_header("Content-Length", str(len(VIDEO)))
        self.end_headers()
        try:
            if first and self.path == "/drop.avi":
                self.wfile.write(VIDEO[:CUT])
                self.wfile.flush()
                self.connection.shutdown(socket.SHUT_RDWR)
            elif first and self.path == "/stall.avi":
                self.wfile.write(VIDEO[:CUT])
                self.wfile.flush()
                server.closing.wait(60)
            else:
                self.wfile.write(VIDEO)
        except OSError:  # the client went away (a test that stops early)
            pass


@pytest.fixture
def server():
    """``(base URL, server)``; ``server.requests`` counts the GETs per path."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.daemon_threads = True
    httpd.lock, httpd.requests, httpd.closing = threading.Lock(), {}, threading.Event()
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", httpd
    httpd.closing.set()
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def silent_port():
    """A port that accepts TCP connections and never sends a byte."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    held = []

    def accept():
        while True:
            try:
                held.append(listener.accept()[0])
            except OSError:  # closed at teardown
                return

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for conn in held:
        conn.close()


def refused_port() -> int:
    """A port nothing listens on (bound here and closed again)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def live_reader(url: str, lines: list, **policy) -> LiveSource:
    policy = LivePolicy(report=lines.append, **{"open_timeout": 2.0, "backoff": 0.05, **policy})
    cap, live, label = policy.open(url)
    assert live
    return LiveSource(cap, label, lambda: policy.open(url)[0], policy)


def read_all(reader: LiveSource, limit: int = 10 * FRAMES) -> int:
    n = 0
    while n < limit and reader.read()[0]:
        n += 1
    reader.release()
    return n


# --------------------------------------------------------------------------- the source alone


def test_the_whole_stream_ends_normally(server):
    base, httpd = server
    lines = []
    reader = live_reader(f"{base}/full.avi", lines)
    assert read_all(reader) == FRAMES
    assert reader.lost is None and reader.reconnects == 0 and lines == []


def test_a_dropped_connection_is_reopened_and_the_run_goes_on(server):
    base, httpd = server
    lines = []
    reader = live_reader(f"{base}/drop.avi", lines)
    n = read_all(reader)
    first = reader.frames - FRAMES  # what the cut connection held
    assert 0 < first < FRAMES and n == first + FRAMES, n  # then the whole file on the second
    assert reader.reconnects == 1 and reader.lost is None
    assert len(lines) == 1 and "read failed or stalled" in lines[0] and "attempt 1 of 5" in lines[0], lines
    assert httpd.requests["/drop.avi"] == 2


def test_a_stall_hits_the_read_timeout_and_reconnects(server, capfd):
    base, httpd = server
    lines = []
    reader = live_reader(f"{base}/stall.avi", lines, read_timeout=1.0)
    start = time.monotonic()
    n = read_all(reader)
    assert n > FRAMES and reader.reconnects == 1 and reader.lost is None, (n, lines)
    assert len(lines) == 1 and "stalled" in lines[0]
    assert time.monotonic() - start < 10
    assert capfd.readouterr().err == ""  # FFmpeg's timeout WARN line is not shown


def test_a_lost_source_backs_off_then_gives_up_with_one_line(server):
    """The server goes away after the first connection: every reopen is refused."""
    base, httpd = server
    lines = []
    reader = live_reader(f"{base}/drop.avi", lines, reconnects=3, backoff=0.05, max_backoff=0.1)
    httpd.shutdown()
    httpd.server_close()
    n = read_all(reader)
    assert 0 < n < FRAMES and reader.reconnects == 0
    assert reader.lost == f"{base}/drop.avi: source lost after {n} frames and not reopened (3 reopen attempts failed)"
    assert [line.split("; reopening in ")[1] for line in lines] == [
        "0.05 s (attempt 1 of 3)", "0.1 s (attempt 2 of 3)", "0.1 s (attempt 3 of 3)"]
    assert "cannot open the stream" in lines[1]  # each retry says why the last one failed


def test_backoff_doubles_up_to_its_cap_and_zero_reconnects_is_allowed():
    policy = LivePolicy(backoff=0.5, max_backoff=3.0)
    assert [policy.delay(i) for i in range(1, 6)] == [0.5, 1.0, 2.0, 3.0, 3.0]
    with pytest.raises(DataError, match="reconnects must be >= 0"):
        LivePolicy(reconnects=-1)
    with pytest.raises(DataError, match="must be > 0 seconds"):
        LivePolicy(open_timeout=0)

    class Dead:
        def read(self):
            return False, None

        def get(self, prop):
            return 0.0

        def release(self):
            pass

    reader = LiveSource(Dead(), "camera 3", lambda: pytest.fail("reopened"), LivePolicy(reconnects=0))
    assert reader.read() == (False, None)
    assert reader.lost == "camera 3: source lost after 0 frames and not reopened (reconnect is off)"


def test_a_source_that_never_answers_fails_within_the_timeout(silent_port):
    start = time.monotonic()
    with pytest.raises(DataError, match=r"cannot open the stream \(no answer within 1 s\)$"):
        open_video(f"http://127.0.0.1:{silent_port}/v.avi", open_timeout=1.0)
    assert time.monotonic() - start < 1.0 + 2.0


def test_a_refused_port_fails_at_once():
    start = time.monotonic()
    with pytest.raises(DataError, match=r"cannot open the stream \(unreachable"):
        open_video(f"http://127.0.0.1:{refused_port()}/v.avi", open_timeout=5.0)
    assert time.monotonic() - start < 2.0


def test_an_open_that_hangs_past_the_deadline_is_abandoned(monkeypatch):
    """A backend that ignores FFmpeg's timeout: the helper thread is given up on."""
    import yolact_lite.data.video_source as vs

    release = threading.Event()

    class Slow:
        def __init__(self, *args):
            release.wait(10)

        def isOpened(self):
            return True

        def release(self):
            pass

    monkeypatch.setattr(vs.cv2, "VideoCapture", Slow)
    start = time.monotonic()
    try:
        with pytest.raises(DataError, match="camera 9 did not open within 0.5 s"):
            open_video(9, open_timeout=0.5)
    finally:
        release.set()
    assert time.monotonic() - start < 3.0
