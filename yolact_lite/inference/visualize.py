"""Drawing detections onto BGR images (OpenCV), vectorised over pixels."""

from __future__ import annotations

import colorsys
from functools import lru_cache
from typing import Optional, Sequence

import cv2
import numpy as np

from ..structures import Detections

__all__ = ["draw_detections", "draw_tracks", "drawn_order", "class_color", "track_color", "draw_text"]


@lru_cache(maxsize=None)
def class_color(label: int) -> tuple:
    """A stable, well-separated BGR colour per class (golden-ratio hue steps)."""
    return _golden_color(label, 0.11)


@lru_cache(maxsize=None)
def track_color(track_id: int) -> tuple:
    """A stable, well-separated BGR colour per track ID (the same ID: the same colour in
    every frame)."""
    return _golden_color(track_id, 0.57)


def _golden_color(index: int, phase: float) -> tuple:
    hue = (index * 0.618033988749895 + phase) % 1.0
    sat = 0.85 if index % 2 == 0 else 0.65
    r, g, b = colorsys.hsv_to_rgb(hue, sat, 0.95)
    return (int(b * 255), int(g * 255), int(r * 255))


def draw_text(image: np.ndarray, text: str, x: int, y: int, color=(255, 255, 255),
              background=(0, 0, 0), scale: float = 0.5, thickness: int = 1) -> None:
    """Text with a filled background box whose top-left corner is (x, y), in place."""
    font = cv2.FONT_HERSHEY_SIMPLEX
    (tw, th), base = cv2.getTextSize(text, font, scale, thickness)
    h, w = image.shape[:2]
    x = int(min(max(x, 0), max(w - tw - 2, 0)))
    y = int(min(max(y, 0), max(h - th - base - 2, 0)))
    cv2.rectangle(image, (x, y), (x + tw + 2, y + th + base + 2), background, -1)
    cv2.putText(image, text, (x + 1, y + th + 1), font, scale, color, thickness, cv2.LINE_AA)


def draw_detections(image_bgr: np.ndarray, detections: Detections, display_threshold: float = 0.0,
                    top_k: Optional[int] = None, alpha: float = 0.45, show_masks: bool = True,
                    show_boxes: bool = True, show_labels: bool = True,
                    class_names: Optional[Sequence[str]] = None, colors: Optional[Sequence[tuple]] = None,
                    prefixes: Optional[Sequence[str]] = None, only: Optional[np.ndarray] = None) -> np.ndarray:
    """A copy of ``image_bgr`` with class-coloured masks, boxes and ``"name score"`` labels.

    Detections are ranked by ``mask_scores`` (YOLACT++: score x predicted mask IoU, as the
    original's display path; else the box score); those ``> display_threshold`` are drawn, at
    most ``top_k``. Where masks overlap, the higher-ranked one is shown. Masks are blended
    with ``alpha`` in one vectorised pass.

    ``colors`` (one BGR tuple per detection) replaces the class colours, ``prefixes`` (one
    string per detection) goes before each label, and ``only`` ([N] bool) limits the drawing
    to those detections (before ``top_k``).
    """
    out = np.array(image_bgr, dtype=np.uint8, copy=True)
    n = len(detections)
    if n == 0:
        return out
    ranking = _ranking(detections)
    order = drawn_order(detections, display_threshold, top_k, only)
    if order.size == 0:
        return out
    names = list(class_names) if class_names is not None else list(detections.class_names)
    classes = _np(detections.classes).astype(np.int64)[order]
    if colors is None:
        colors = np.array([class_color(int(c)) for c in classes], dtype=np.float32)  # [K, 3]
    else:
        colors = np.array([colors[int(i)] for i in order], dtype=np.float32)
    h, w = out.shape[:2]

    if show_masks and detections.masks.numel() and tuple(detections.masks.shape[-2:]) == (h, w):
        owner = _mask_owner(_np(detections.masks), order, h, w)
        ys, xs = np.nonzero(owner >= 0)
        if ys.size:
            layer = colors[owner[ys, xs]]  # [M, 3]
            pixels = out[ys, xs].astype(np.float32)
            out[ys, xs] = np.clip(pixels * (1.0 - alpha) + layer * alpha + 0.5, 0, 255).astype(np.uint8)

    boxes = _np(detections.boxes)[order]
    scores = ranking[order]
    for i in range(order.size - 1, -1, -1):  # best last, so it ends up on top
        color = tuple(int(v) for v in colors[i])
        x1, y1, x2, y2 = (int(round(float(v))) for v in boxes[i])
        if show_boxes:
            cv2.rectangle(out, (x1, y1), (max(x2 - 1, x1), max(y2 - 1, y1)), color, 1)
        if show_labels:
            c = int(classes[i])
            name = names[c] if 0 <= c < len(names) else f"class_{c}"
            prefix = prefixes[int(order[i])] if prefixes is not None else ""
            draw_text(out, f"{prefix}{name} {scores[i]:.2f}", x1, y1 - 16, (255, 255, 255), color, 0.45, 1)
    return out


def draw_tracks(image_bgr: np.ndarray, detections: Detections, tracks: Sequence, display_threshold: float = 0.0,
                top_k: Optional[int] = None, trails: bool = True, alpha: float = 0.45,
                class_names: Optional[Sequence[str]] = None) -> np.ndarray:
    """A copy of ``image_bgr`` with the tracked detections drawn in their track's colour,
    labelled ``"#ID name score"``, and (``trails``) each track's recent centres as a line.

    ``tracks``: what :meth:`yolact_lite.inference.tracking.Tracker.update` returned for this frame
    (anything with ``track_id``, ``detection_index`` and ``trail``). Detections without a
    track are not drawn; ``display_threshold`` / ``top_k`` filter the drawing only, as in
    :func:`draw_detections`.
    """
    n = len(detections)
    colors = [(160, 160, 160)] * n
    prefixes = [""] * n
    tracked = np.zeros(n, dtype=bool)
    for track in tracks:
        d = int(track.detection_index)
        if 0 <= d < n:
            colors[d] = track_color(int(track.track_id))
            prefixes[d] = f"#{track.track_id} "
            tracked[d] = True
    out = draw_detections(image_bgr, detections, display_threshold, top_k, alpha=alpha, class_names=class_names,
                          colors=colors, prefixes=prefixes, only=tracked)
    if trails and n:
        drawn = set(drawn_order(detections, display_threshold, top_k, tracked).tolist())
        for track in tracks:
            points = np.round(np.asarray(track.trail, dtype=np.float64)).astype(np.int32)
            if int(track.detection_index) in drawn and len(points) >= 2:
                cv2.polylines(out, [points.reshape(-1, 1, 2)], False, track_color(int(track.track_id)), 2,
                              cv2.LINE_AA)
    return out


def drawn_order(detections: Detections, display_threshold: float = 0.0, top_k: Optional[int] = None,
                only: Optional[np.ndarray] = None) -> np.ndarray:
    """Indices of the detections the display filter keeps, best first: ranked by
    ``mask_scores``, ``> display_threshold``, within ``only`` ([N] bool) if given, at most
    ``top_k``."""
    ranking = _ranking(detections)
    order = np.argsort(-ranking, kind="stable")
    order = order[ranking[order] > display_threshold]
    if only is not None:
        order = order[np.asarray(only, dtype=bool)[order]]
    if top_k is not None:
        order = order[: max(int(top_k), 0)]
    return order


def _ranking(detections: Detections) -> np.ndarray:
    return _np(detections.mask_scores if detections.mask_scores is not None else detections.scores)


def _mask_owner(masks: np.ndarray, order: np.ndarray, h: int, w: int) -> np.ndarray:
    """[H, W] int: position in ``order`` of the best-ranked mask covering each pixel, -1 for
    none. Masks are painted worst first, each only over its own bounding rows/columns."""
    owner = np.full((h, w), -1, dtype=np.int32)
    for rank in range(order.size - 1, -1, -1):
        mask = masks[order[rank]]
        rows = np.flatnonzero(mask.any(axis=1))
        if rows.size == 0:
            continue
        band = mask[rows[0]:rows[-1] + 1]
        cols = np.flatnonzero(band.any(axis=0))
        sub = band[:, cols[0]:cols[-1] + 1]
        owner[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1][sub] = rank
    return owner


def _np(t) -> np.ndarray:
    if isinstance(t, np.ndarray):
        return t
    return t.detach().cpu().numpy()
