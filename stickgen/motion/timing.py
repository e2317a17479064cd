"""Time: resample by real time to 25 fps, cut into 250-frame windows, pad short clips with a mask.

The published AMASS converter stretched every clip to exactly 250 frames whatever its duration
(a 3 s clip played 3.3x slower). Here a sample k of the output is the input at time k / fps_out,
so duration is preserved and long clips become several windows.
"""

from __future__ import annotations

import numpy as np

FPS = 25
WINDOW = 250  # 10 s


def resample(x: np.ndarray, fps_in: float, fps_out: float = FPS) -> np.ndarray:
    """Resample [T, ...] along time by linear interpolation at t_k = k / fps_out.

    The output has floor((T - 1) * fps_out / fps_in) + 1 frames, so the last output frame is at
    or before the last input frame (duration kept to within one output frame).
    When downsampling by more than 1.5x (e.g. 120 -> 25 fps) a box filter as wide as the ratio
    is applied first: sampling raw mocap jitter at a lower rate would alias it into the result.
    """
    x = np.asarray(x)
    T = x.shape[0]
    if T == 0:
        return x.copy()
    if abs(fps_in - fps_out) < 1e-9:
        return x.astype(np.float32, copy=True)
    ratio = fps_in / fps_out
    src = x.astype(np.float64)
    if ratio > 1.5:
        w = int(round(ratio))
        # centred moving average with edge padding, vectorised via a cumulative sum
        pad_l, pad_r = w // 2, w - 1 - w // 2
        padded = np.concatenate([np.repeat(src[:1], pad_l, 0), src, np.repeat(src[-1:], pad_r, 0)], 0)
        c = np.cumsum(padded, axis=0)
        c = np.concatenate([np.zeros_like(c[:1]), c], 0)
        src = (c[w:] - c[:-w]) / w
    n_out = int(np.floor((T - 1) / ratio + 1e-9)) + 1
    t = np.arange(n_out) * ratio
    i0 = np.minimum(np.floor(t).astype(np.int64), T - 1)
    i1 = np.minimum(i0 + 1, T - 1)
    w1 = (t - i0).reshape((-1,) + (1,) * (x.ndim - 1))
    return (src[i0] * (1.0 - w1) + src[i1] * w1).astype(np.float32)


def window_starts(n_frames: int, window: int = WINDOW, stride: int = WINDOW // 2) -> list[int]:
    """Start frames of the windows covering a clip: every `stride` frames, plus one window
    aligned to the end so the tail is never dropped. A clip shorter than `window` gets one
    window (padded by the caller)."""
    if n_frames <= window:
        return [0]
    starts = list(range(0, n_frames - window + 1, stride))
    if starts[-1] + window < n_frames:
        starts.append(n_frames - window)
    return starts


def cut_window(x: np.ndarray, start: int, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """([window, ...] frames, [window] bool mask). Frames past the clip's end repeat its last
    frame (so every value stays finite and physically still) and are masked out."""
    seg = x[start:start + window].copy()  # callers may edit the window in place
    n = seg.shape[0]
    mask = np.zeros(window, bool)
    mask[:n] = True
    if n < window:
        seg = np.concatenate([seg, np.repeat(seg[-1:], window - n, axis=0)], axis=0)
    return seg, mask
