"""Turn motion arrays into files a person can watch: GIF, MP4 (H.264), animated SVG, PNG sheets.

Input is v3 motion [T, 48] (12 segments x (x1, y1, x2, y2), +Y up, 1 unit ~ body height, floor at
y = 0) or legacy [T, 20] (upgraded to v3 with `skeleton.legacy_to_v3` for drawing).

Drawing conventions, shared by every output:

- One fixed camera per clip, fitted to the bounding box of all (valid) frames plus a margin, so
  walking, turning and falling stay visible as motion across the frame (never re-centred).
- y up on screen; a grey ground line at y = 0 when it lies near the figure.
- Left limbs blue, right limbs orange (Okabe-Ito colours, distinguishable with colour-blindness),
  torso/head/pelvis dark grey, a filled head circle at the head end of the head segment whose radius
  is proportional to the figure's own size. A small "L R" legend names the two colours.

`render_frames` is the raster core shared by GIF, MP4 and the PNG sheets. Per frame it only copies
a prepared background and draws ~40 primitives; every coordinate transform is done for all frames
at once with NumPy.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence
from xml.sax.saxutils import escape

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from stickgen.errors import MissingDependencyError
from stickgen.motion.skeleton import LEGACY_DIM, V3_DIM, legacy_to_v3

# --------------------------------------------------------------------------------------------
# style

BG = (255, 255, 255)
INK = {
    "centre": (40, 40, 40),
    "left": (0, 114, 178),  # blue
    "right": (213, 94, 0),  # vermillion
    "ground": (150, 150, 150),
    "trail": (190, 190, 190),
    "text": (70, 70, 70),
}
#: Ink of each v3 segment (head, torsos and pelvis width are "centre").
SEG_INK = ("centre", "centre", "centre", "left", "left", "right", "right",
           "left", "left", "right", "right", "centre")
#: Draw order: centre first, then right, then left on top (no depth is known; any fixed order
#: keeps frames consistent).
DRAW_ORDER = tuple(i for side in ("centre", "right", "left") for i, s in enumerate(SEG_INK) if s == side)
HEAD_RADIUS = 0.055  # x body scale; a head is ~1/8 of standing height, drawn a little smaller
MARGIN = 0.06  # fraction of the image kept free on every side
SUPERSAMPLE = 2  # raster anti-aliasing: draw at 2x, box-filter down


def _hex(c: tuple[int, int, int]) -> str:
    return "#%02x%02x%02x" % c


# --------------------------------------------------------------------------------------------
# input handling and camera


def as_segments(motion: np.ndarray) -> np.ndarray:
    """[T, 48] v3, [T, 12, 4] v3 or [T, 20] legacy -> float64 [T, 12, 4] segments."""
    m = np.asarray(motion, dtype=np.float64)
    if m.ndim == 3 and m.shape[1:] == (12, 4):
        return m
    if m.ndim != 2 or m.shape[1] not in (V3_DIM, LEGACY_DIM):
        raise ValueError(f"motion must be [T, 48] (v3) or [T, 20] (legacy), got shape {list(m.shape)}")
    if m.shape[1] == LEGACY_DIM:
        # Legacy frames have no head/elbows/knees; the upgrade synthesises them. NaN padding
        # stays NaN through the (affine) conversion, so masking still works.
        m = legacy_to_v3(m).astype(np.float64)
    return m.reshape(-1, 12, 4)


def _select(segs: np.ndarray, mask: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Keep the valid frames. Returns (segments [T', 12, 4], their frame indices [T'])."""
    T = segs.shape[0]
    idx = np.arange(T)
    if mask is not None:
        mask = np.asarray(mask, dtype=bool).reshape(-1)
        if mask.shape[0] != T:
            raise ValueError(f"mask has {mask.shape[0]} entries for {T} frames")
        idx = idx[mask]
    if idx.size == 0:
        raise ValueError("nothing to render: the motion has no (valid) frames")
    segs = segs[idx]
    finite = np.isfinite(segs).all(axis=(1, 2))
    if not finite.all():
        raise ValueError(f"non-finite coordinates in frame {int(idx[np.argmin(finite)])} (mask it out to skip it)")
    return segs, idx


def body_scale(segs: np.ndarray) -> float:
    """Figure size in data units: the 2D leg + spine chain (shin + thigh + torso + head segment),
    90th percentile over frames. Projection only shortens bones, so a high percentile recovers
    roughly the standing height even for clips with bows or falls."""
    length = np.linalg.norm(segs[:, :, 2:] - segs[:, :, :2], axis=-1)  # [T, 12]
    legs = 0.5 * (length[:, 7] + length[:, 8] + length[:, 9] + length[:, 10])
    chain = legs + length[:, 0] + length[:, 1] + length[:, 2]
    s = float(np.percentile(chain, 90))
    return s if s > 1e-6 else 1.0


@dataclass(frozen=True)
class Camera:
    """Fixed data -> pixel mapping: px = (x - cx) * scale + px_cx, py = px_cy - (y - cy) * scale
    (screen rows grow downwards, data y grows upwards)."""

    scale: float  # pixels per data unit
    cx: float
    cy: float
    px_cx: float
    px_cy: float
    ground_visible: bool

    def to_px(self, xy: np.ndarray) -> np.ndarray:
        """[..., 2] data points -> [..., 2] pixel coordinates (float)."""
        xy = np.asarray(xy, dtype=np.float64)
        out = np.empty_like(xy)
        out[..., 0] = (xy[..., 0] - self.cx) * self.scale + self.px_cx
        out[..., 1] = self.px_cy - (xy[..., 1] - self.cy) * self.scale
        return out


def fit_camera(segs: np.ndarray, size: tuple[int, int], *, head_r: float, ground: bool = True,
               top_band: int = 0, margin: float = MARGIN) -> Camera:
    """One camera for the whole clip: the bounding box of every segment end and the head circle
    (segs [T, 12, 4]), plus the ground line when it lies within one body height of the figure, fit
    uniformly into `size` = (W, H) minus `top_band` pixels reserved for text at the top."""
    W, H = size
    pts = segs.reshape(-1, 2)
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    heads = segs[:, 0, 2:]
    lo = np.minimum(lo, heads.min(axis=0) - head_r)
    hi = np.maximum(hi, heads.max(axis=0) + head_r)
    scale_units = head_r / HEAD_RADIUS
    ground_visible = bool(ground and lo[1] - scale_units <= 0.0 <= hi[1] + scale_units)
    if ground_visible:
        lo[1], hi[1] = min(lo[1], 0.0), max(hi[1], 0.0)
    # Never zoom in further than ~1.2 body heights: a figure standing still stays human-sized.
    extent = np.maximum(hi - lo, 1.2 * scale_units)
    avail_w = W * (1 - 2 * margin)
    avail_h = (H - top_band) * (1 - 2 * margin)
    scale = float(min(avail_w / extent[0], avail_h / extent[1]))
    centre = 0.5 * (lo + hi)
    # A wide clip (a long walk) leaves vertical slack; put two thirds of it above the figure so
    # the ground sits low in the frame instead of mid-screen.
    slack = avail_h - extent[1] * scale
    px_cy = top_band + (H - top_band) / 2.0 + slack / 6.0
    return Camera(scale, float(centre[0]), float(centre[1]), W / 2.0, px_cy, ground_visible)


# --------------------------------------------------------------------------------------------
# raster core


def _font(px: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=px)
    except (TypeError, OSError):  # Pillow without FreeType: fixed-size bitmap font
        return ImageFont.load_default()


def _fit_text(d: ImageDraw.ImageDraw, text: str, font, width: float) -> str:
    """`text`, shortened with an ellipsis so it fits in `width` pixels (long prompts as titles)."""
    if d.textlength(text, font=font) <= width:
        return text
    lo, hi = 0, len(text)  # longest prefix that fits, by bisection
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if d.textlength(text[:mid] + "…", font=font) <= width:
            lo = mid
        else:
            hi = mid - 1
    return text[:lo].rstrip() + "…" if lo else ""


class _Painter:
    """Draws frames of one clip. Everything that does not change per frame (camera, pixel
    coordinates for all frames, background with ground/legend/title) is prepared once."""

    def __init__(self, segs: np.ndarray, frame_idx: np.ndarray, size: tuple[int, int], *, fps: float,
                 title: str | None, trail: bool, ground: bool, frame_counter: bool, legend: bool,
                 antialias: bool):
        self.size = (int(size[0]), int(size[1]))
        W, H = self.size
        self.ss = SUPERSAMPLE if antialias else 1
        self.frame_idx, self.fps = frame_idx, fps
        self.frame_counter, self.trail = frame_counter, trail
        band = max(12, round(0.06 * H)) if (title or frame_counter or legend) else 0
        self.font = _font(max(8, band - 4) * self.ss)
        head_r = HEAD_RADIUS * body_scale(segs)
        self.cam = fit_camera(segs, self.size, head_r=head_r, ground=ground, top_band=band)
        ss = self.ss
        # [T, 12, 2, 2] pixel end points at the drawing resolution, for all frames at once.
        self.px = self.cam.to_px(segs.reshape(-1, 12, 2, 2)) * ss
        self.pelvis = self.px[:, 2, 1]
        self.head_r = max(2.0, head_r * self.cam.scale) * ss
        self.lw = max(2, round(max(1.5, min(W, H) / 100) * ss))
        self.base = self._background(title, legend, band)

    def _background(self, title: str | None, legend: bool, band: int) -> Image.Image:
        W, H = self.size
        ss = self.ss
        img = Image.new("RGB", (W * ss, H * ss), BG)
        d = ImageDraw.Draw(img)
        if self.cam.ground_visible:
            gy = float(self.cam.to_px(np.array([0.0, 0.0]))[1]) * ss
            d.line([(0, gy), (W * ss, gy)], fill=INK["ground"], width=max(1, self.lw // 2))
        pad = 3 * ss
        if legend:
            # Right-aligned "L R" in the limb colours tells the viewer which colour is which side.
            x = W * ss - pad
            for label, ink in (("R", "right"), ("L", "left")):
                x -= d.textlength(label, font=self.font)
                d.text((x, pad), label, fill=INK[ink], font=self.font)
                x -= d.textlength(" ", font=self.font)
            self.counter_right = x
        else:
            self.counter_right = W * ss - pad
        if title:
            room = self.counter_right - 2 * pad
            if self.frame_counter:
                room -= d.textlength(" 00.00s #000", font=self.font)
            d.text((pad, pad), _fit_text(d, title, self.font, room), fill=INK["text"], font=self.font)
        return img

    def __len__(self) -> int:
        return self.px.shape[0]

    def frame(self, k: int) -> Image.Image:
        """The k-th rendered (valid) frame as an RGB image of `size`."""
        img = self.base.copy()
        d = ImageDraw.Draw(img)
        if self.trail and k > 0:
            d.line([tuple(p) for p in self.pelvis[: k + 1]], fill=INK["trail"], width=max(1, self.lw // 2))
        p = self.px[k]
        cap = self.lw / 2.0
        for i in DRAW_ORDER:
            ink = INK[SEG_INK[i]]
            (x1, y1), (x2, y2) = p[i]
            d.line([(x1, y1), (x2, y2)], fill=ink, width=self.lw)
            # Round caps: PIL's wide lines end flat, leaving notches at the joints.
            d.ellipse([x1 - cap, y1 - cap, x1 + cap, y1 + cap], fill=ink)
            d.ellipse([x2 - cap, y2 - cap, x2 + cap, y2 + cap], fill=ink)
        hx, hy = p[0, 1]
        r = self.head_r
        d.ellipse([hx - r, hy - r, hx + r, hy + r], fill=INK["centre"])
        if self.frame_counter:
            f = int(self.frame_idx[k])
            text = f"{f / self.fps:.2f}s #{f}"
            x = self.counter_right - d.textlength(text, font=self.font)
            d.text((x, 3 * self.ss), text, fill=INK["text"], font=self.font)
        return img.reduce(self.ss) if self.ss > 1 else img

    def __iter__(self) -> Iterator[Image.Image]:
        return (self.frame(k) for k in range(len(self)))


def _painter(motion: np.ndarray, size: tuple[int, int], *, mask=None, fps: float = 25, title=None,
             trail=False, ground=True, frame_counter=False, legend=True, antialias=True) -> _Painter:
    segs, idx = _select(as_segments(motion), mask)
    return _Painter(segs, idx, size, fps=fps, title=title, trail=trail, ground=ground,
                    frame_counter=frame_counter, legend=legend, antialias=antialias)


def render_frames(motion: np.ndarray, size: tuple[int, int] = (320, 320), *, mask: np.ndarray | None = None,
                  fps: float = 25, title: str | None = None, trail: bool = False, ground: bool = True,
                  frame_counter: bool = False, legend: bool = True, antialias: bool = True) -> np.ndarray:
    """Rasterise motion [T, 48|20] to uint8 frames [T', H, W, 3] with size = (W, H); T' = T, or the
    number of True entries of `mask` [T]. antialias=False gives exact palette colours (tests)."""
    p = _painter(motion, size, mask=mask, fps=fps, title=title, trail=trail, ground=ground,
                 frame_counter=frame_counter, legend=legend, antialias=antialias)
    W, H = p.size
    out = np.empty((len(p), H, W, 3), np.uint8)
    for k, img in enumerate(p):
        out[k] = np.asarray(img)
    return out


# --------------------------------------------------------------------------------------------
# writers


@contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to `path` (same suffix) and move it into place on success, so
    a crash never leaves a half-written file under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


GIF_TRANSPARENT = 1  # palette slot never drawn with; marks "unchanged" pixels in delta frames


def _gif_palette() -> tuple[bytes, np.ndarray]:
    """A fixed palette for the anti-aliased frames and a 15-bit RGB -> index lookup table.

    Entries: 0 = background, 1 = transparent slot (same colour, never chosen by the table), then
    8 blend levels from background to each ink, which covers the anti-aliased edge pixels."""
    colours = [BG, BG]
    bg = np.array(BG, np.float64)
    for ink in INK.values():
        for a in np.arange(1, 9) / 8:
            colours.append(tuple(np.round(a * np.array(ink) + (1 - a) * bg).astype(int)))
    pal = np.array(colours, np.float64)  # [P, 3]
    # Nearest palette entry for the centre of each 5-bit-per-channel cell.
    q = (np.arange(32) << 3) + 4
    cells = np.stack(np.meshgrid(q, q, q, indexing="ij"), axis=-1).reshape(-1, 3).astype(np.float64)
    d = (pal**2).sum(-1)[None, :] - 2.0 * cells @ pal.T  # squared distance up to a per-cell constant
    d[:, GIF_TRANSPARENT] = np.inf
    lut = np.argmin(d, axis=1).astype(np.uint8)
    return bytes(np.array(colours, np.uint8).ravel()), lut


_GIF_PALETTE: tuple[bytes, np.ndarray] | None = None


def _to_palette(rgb: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """[H, W, 3] uint8 -> [H, W] palette indices via the 15-bit lookup table."""
    c = rgb.astype(np.uint16) >> 3
    return lut[(c[..., 0] << 10) | (c[..., 1] << 5) | c[..., 2]]


def _p_image(idx: np.ndarray, pal_bytes: bytes) -> Image.Image:
    im = Image.fromarray(np.ascontiguousarray(idx), mode="P")
    im.putpalette(pal_bytes)
    return im


def _gif_delta(prev: np.ndarray, cur: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
    """The part of `cur` [H, W] that differs from `prev`: (patch, (x, y) offset). Unchanged pixels
    inside the patch become transparent, which LZW compresses to almost nothing. An identical
    frame gives a 1x1 transparent patch, so it is still written as its own frame."""
    changed = prev != cur
    rows, cols = np.flatnonzero(changed.any(axis=1)), np.flatnonzero(changed.any(axis=0))
    if rows.size == 0:
        return np.full((1, 1), GIF_TRANSPARENT, np.uint8), (0, 0)
    y0, y1, x0, x1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    patch = np.where(changed[y0:y1, x0:x1], cur[y0:y1, x0:x1], GIF_TRANSPARENT).astype(np.uint8)
    return patch, (int(x0), int(y0))


def _write_gif(p: _Painter, path: Path) -> None:
    """Looping GIF with exactly one GIF frame per rendered motion frame.

    Frames are written one by one with Pillow's GIF frame encoder rather than `save_all`, which
    merges consecutive identical frames (breaking frame i <-> motion frame i for still poses) and
    cannot mark unchanged pixels transparent without re-optimising the palette. Each frame after
    the first is a transparent-background delta drawn over the previous one (disposal 1). GIF
    delays are centiseconds: 25 fps -> exactly 40 ms."""
    from PIL import GifImagePlugin as gif

    global _GIF_PALETTE
    if _GIF_PALETTE is None:
        _GIF_PALETTE = _gif_palette()
    pal_bytes, lut = _GIF_PALETTE
    duration = max(10, int(round(100.0 / p.fps)) * 10)
    prev = None
    with open(path, "wb") as f:
        for img in p:
            cur = _to_palette(np.asarray(img), lut)
            if prev is None:
                first = _p_image(cur, pal_bytes)
                header, _ = gif.getheader(first, info={"loop": 0, "duration": duration})
                f.write(b"".join(header))
                f.write(b"".join(gif.getdata(first, (0, 0), duration=duration, disposal=1)))
            else:
                patch, offset = _gif_delta(prev, cur)
                f.write(b"".join(gif.getdata(_p_image(patch, pal_bytes), offset, duration=duration,
                                             disposal=1, transparency=GIF_TRANSPARENT)))
            prev = cur
        f.write(b";")  # GIF trailer


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with the `imageio-ffmpeg` package."""
    try:
        import imageio_ffmpeg
    except ImportError as e:
        raise MissingDependencyError("MP4 output needs the 'imageio-ffmpeg' package: pip install imageio-ffmpeg") from e
    return imageio_ffmpeg.get_ffmpeg_exe()


def _write_mp4(p: _Painter, path: Path, crf: int = 23, preset: str = "veryfast") -> None:
    """H.264 yuv420p MP4 (plays in browsers); raw RGB frames are streamed to ffmpeg's stdin so the
    clip is never held in memory. yuv420p needs even sizes: `render` rounds the size up."""
    W, H = p.size
    cmd = [ffmpeg_exe(), "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24",
           "-s", f"{W}x{H}", "-framerate", f"{p.fps:g}", "-i", "-", "-an",
           "-c:v", "libx264", "-preset", preset, "-tune", "animation", "-crf", str(crf),
           "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4", str(path)]
    # stderr goes to a file, not a pipe: a full pipe could block ffmpeg while we block on stdin.
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err)
        assert proc.stdin is not None
        try:
            for img in p:
                proc.stdin.write(img.tobytes())
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ffmpeg died; its exit code and message are reported below
        finally:
            rc = proc.wait()
        if rc != 0:
            err.seek(0)
            raise RuntimeError(f"ffmpeg failed (exit {rc}) writing {path}: {err.read().decode(errors='replace')[-2000:]}")


def _svg_values(a: np.ndarray) -> str:
    """[T] numbers -> "v0;v1;..." with 3 decimals, trailing zeros and "-0" removed."""
    s = np.char.mod("%.3f", np.round(a, 3) + 0.0)
    s = np.char.rstrip(np.char.rstrip(s, "0"), ".")
    return ";".join(s.tolist())


def _write_svg(motion: np.ndarray, path: Path, *, size, mask, fps, title, trail, ground, legend) -> None:
    """One self-contained animated SVG (SMIL, no script). Coordinates stay in data units inside a
    group whose transform is the camera (y flipped); each line animates x1/y1/x2/y2 and the head
    circle cx/cy with calcMode="discrete", so each of the T' values is shown for exactly 1/fps."""
    segs, idx = _select(as_segments(motion), mask)
    W, H = int(size[0]), int(size[1])
    band = max(12, round(0.06 * H)) if (title or legend) else 0
    head_r = HEAD_RADIUS * body_scale(segs)
    cam = fit_camera(segs, (W, H), head_r=head_r, ground=ground, top_band=band)
    s = cam.scale
    tx, ty = cam.px_cx - s * cam.cx, cam.px_cy + s * cam.cy
    lw = max(1.5, min(W, H) / 100)
    dur = f"{len(idx) / fps:g}s"
    anim = f'dur="{dur}" repeatCount="indefinite" calcMode="discrete"'
    font = f'font-family="sans-serif" font-size="{band - 4}"'
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}">',
           f'<rect width="{W}" height="{H}" fill="{_hex(BG)}"/>']
    if cam.ground_visible:
        out.append(f'<line x1="0" y1="{ty:.2f}" x2="{W}" y2="{ty:.2f}" stroke="{_hex(INK["ground"])}" '
                   f'stroke-width="{max(1.0, lw / 2):.2f}"/>')
    if title:
        out.append(f'<text x="3" y="{band - 3}" fill="{_hex(INK["text"])}" {font}>{escape(title)}</text>')
    if legend:
        out.append(f'<text x="{W - 3}" y="{band - 3}" text-anchor="end" {font}>'
                   f'<tspan fill="{_hex(INK["left"])}">L</tspan> <tspan fill="{_hex(INK["right"])}">R</tspan></text>')
    out.append(f'<g transform="matrix({s:.4f} 0 0 {-s:.4f} {tx:.3f} {ty:.3f})" stroke-linecap="round" '
               f'stroke-width="{lw / s:.4f}">')
    if trail:
        pts = " ".join(f"{x:.3f},{y:.3f}" for x, y in segs[:, 2, 2:])
        out.append(f'<polyline points="{pts}" fill="none" stroke="{_hex(INK["trail"])}" '
                   f'stroke-width="{lw / 2 / s:.4f}"/>')
    for i in DRAW_ORDER:
        first = " ".join(f'{a}="{v:.3f}"' for a, v in zip(("x1", "y1", "x2", "y2"), segs[0, i]))
        out.append(f'<line {first} stroke="{_hex(INK[SEG_INK[i]])}">')
        for j, attr in enumerate(("x1", "y1", "x2", "y2")):
            out.append(f'<animate attributeName="{attr}" values="{_svg_values(segs[:, i, j])}" {anim}/>')
        out.append("</line>")
    hx, hy = segs[0, 0, 2:]
    out.append(f'<circle cx="{hx:.3f}" cy="{hy:.3f}" r="{head_r:.3f}" fill="{_hex(INK["centre"])}" stroke="none">')
    out.append(f'<animate attributeName="cx" values="{_svg_values(segs[:, 0, 2])}" {anim}/>')
    out.append(f'<animate attributeName="cy" values="{_svg_values(segs[:, 0, 3])}" {anim}/>')
    out += ["</circle>", "</g>", "</svg>"]
    path.write_text("\n".join(out), encoding="utf-8")


def _pick(n_total: int, n: int) -> np.ndarray:
    """n evenly spaced indices in [0, n_total), first and last included."""
    return np.unique(np.linspace(0, n_total - 1, max(1, min(n, n_total))).round().astype(int))


def _contact_sheet(p: _Painter, n: int, cols: int, title: str | None) -> Image.Image:
    """A grid of n evenly spaced frames of one clip (same camera in every cell, so translation
    reads across the sheet), each cell stamped with its time; optional title band on top."""
    picks = _pick(len(p), n)
    cols = max(1, min(cols, len(picks)))
    rows = -(-len(picks) // cols)
    W, H = p.size
    band = max(14, round(0.06 * H)) if title else 0
    sheet = Image.new("RGB", (cols * W, band + rows * H), BG)
    d = ImageDraw.Draw(sheet)
    for c, k in enumerate(picks):
        x, y = (c % cols) * W, band + (c // cols) * H
        sheet.paste(p.frame(int(k)), (x, y))
        d.rectangle([x, y, x + W - 1, y + H - 1], outline=(220, 220, 220))
    if title:
        d.text((4, 2), title, fill=INK["text"], font=_font(band - 4))
    return sheet


def render(motion: np.ndarray, out_path: str | os.PathLike, *, fps: float = 25, mask: np.ndarray | None = None,
           title: str | None = None, size: tuple[int, int] = (320, 320), trail: bool = False,
           ground: bool = True, frame_counter: bool = False, legend: bool = True,
           sheet_frames: int = 8, sheet_cols: int = 4) -> Path:
    """Render motion [T, 48] (or legacy [T, 20]) to `out_path`; the suffix picks the format:

    .gif  animated, looping, one GIF frame per (valid) motion frame, 1000/fps ms each.
    .mp4  H.264 yuv420p (size rounded up to even), via imageio-ffmpeg's bundled ffmpeg.
    .svg  one animated SVG (SMIL), plays in a browser without script; dur = T'/fps.
    .png  contact sheet: `sheet_frames` evenly spaced frames in rows of `sheet_cols`, each cell
          `size` with its time stamped.

    mask [T] bool: only frames marked True are rendered (and framed). Returns the path written.
    """
    path = Path(out_path)
    kind = path.suffix.lower()
    if kind not in (".gif", ".mp4", ".svg", ".png"):
        raise ValueError(f"{path}: unsupported output type {path.suffix!r} (use .gif, .mp4, .svg or .png)")
    if not (np.isfinite(fps) and fps > 0):
        raise ValueError(f"fps must be positive, got {fps!r}")
    if kind == ".mp4":
        size = (size[0] + size[0] % 2, size[1] + size[1] % 2)
    common = dict(mask=mask, fps=fps, trail=trail, ground=ground, legend=legend)
    with _atomic(path) as tmp:
        if kind == ".svg":
            _write_svg(motion, tmp, size=size, title=title, **common)
        elif kind == ".png":
            p = _painter(motion, size, frame_counter=True, **common)
            _contact_sheet(p, sheet_frames, sheet_cols, title).save(tmp, format="PNG", optimize=False)
        else:
            p = _painter(motion, size, title=title, frame_counter=frame_counter, **common)
            (_write_gif if kind == ".gif" else _write_mp4)(p, tmp)
    return path


def grid_png(motions: Sequence[np.ndarray], out_path: str | os.PathLike, labels: Sequence[str] | None = None,
             frames_per_clip: int = 6, *, masks: Sequence[np.ndarray | None] | None = None,
             cell_size: tuple[int, int] = (160, 160), fps: float = 25) -> Path:
    """One PNG comparing several clips: row r shows `frames_per_clip` evenly spaced frames of
    motions[r] ([T_r, 48|20]; lengths may differ), each row with its own fixed camera and an
    optional label band above it (labels[r]). masks[r] [T_r] bool restricts a row to valid frames."""
    if not motions:
        raise ValueError("grid_png needs at least one motion")
    if labels is not None and len(labels) != len(motions):
        raise ValueError(f"{len(labels)} labels for {len(motions)} motions")
    if masks is not None and len(masks) != len(motions):
        raise ValueError(f"{len(masks)} masks for {len(motions)} motions")
    W, H = cell_size
    band = max(14, round(0.1 * H)) if labels is not None else 0
    sheet = Image.new("RGB", (frames_per_clip * W, len(motions) * (band + H)), BG)
    d = ImageDraw.Draw(sheet)
    font = _font(max(10, band - 4))
    for r, m in enumerate(motions):
        y0 = r * (band + H)
        p = _painter(m, cell_size, mask=None if masks is None else masks[r], fps=fps, frame_counter=True,
                     legend=(r == 0))
        for c, k in enumerate(_pick(len(p), frames_per_clip)):
            sheet.paste(p.frame(int(k)), (c * W, y0 + band))
            d.rectangle([c * W, y0 + band, (c + 1) * W - 1, y0 + band + H - 1], outline=(220, 220, 220))
        if labels is not None:
            d.text((4, y0 + 2), str(labels[r]), fill=INK["text"], font=font)
    path = Path(out_path)
    with _atomic(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path
