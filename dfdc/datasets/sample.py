"""Built-in sample dataset in the exact DFDC layout, made from real photographs.

Faces come from photographs that ship inside installed packages
(scikit-image's astronaut, cameraman and LFW subset, matplotlib's Grace
Hopper). A real video composites one or two faces on a background photo and
films it with a smooth camera path, lighting drift and sensor noise. Each fake
is made from its real video frame by frame, as DFDC fakes were: another
identity's face is aligned on the five MTCNN landmarks, colour-matched and
blended with a feathered mask. Everything is deterministic for a seed.
"""
from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import cv2
import numpy as np
from tqdm import tqdm

from dfdc.parallel import prefetch_map
from dfdc.store import atomic_path
from dfdc.video import write_video

RESOLUTIONS = [(640, 360), (360, 640), (854, 480), (480, 360), (320, 240), (768, 432)]
FPS = [25.0, 29.97, 30.0]
LFW_FACES = [1, 3, 15, 18, 21, 26, 31, 35]  # distinct people in skimage's LFW subset
REGIONS = ["face", "inner", "mouth"]
SKIN_TONES = [(1.0, 0.86, 0.74), (0.95, 0.78, 0.62), (0.78, 0.6, 0.48), (1.0, 0.9, 0.82), (0.62, 0.46, 0.36)]


@dataclass
class Identity:
    """A face photograph prepared for compositing: RGB, soft alpha, 5 landmarks."""

    name: str
    image: np.ndarray  # (h, w, 3) uint8
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    landmarks: np.ndarray  # (5, 2) float32, image pixels
    face_size: float  # longer side of the detector's box, image pixels

    @property
    def eye_dist(self) -> float:
        dx, dy = (self.landmarks[1] - self.landmarks[0]).tolist()
        return math.hypot(dx, dy)


@dataclass
class Scene:
    """Everything needed to render one real video and its fakes."""

    name: str
    width: int
    height: int
    fps: float
    frames: int
    crf: int
    background: np.ndarray
    faces: list[tuple[Identity, np.ndarray]]  # identity, 3x3 head->canvas matrix
    cam: dict = field(default_factory=dict)
    light: dict = field(default_factory=dict)
    noise: float = 2.0
    seed: int = 0


def _photos() -> list[tuple[str, np.ndarray]]:
    import matplotlib.cbook as cbook
    from PIL import Image
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as f:
        hopper = np.array(Image.open(f).convert("RGB"))
    photos = [
        ("astronaut", data.astronaut()),
        ("grace_hopper", hopper),
        ("cameraman", np.repeat(data.camera()[..., None], 3, axis=2)),
    ]
    lfw = data.lfw_subset()
    for k, i in enumerate(LFW_FACES):
        grey = cv2.resize((lfw[i] * 255).astype(np.float32), (200, 200), interpolation=cv2.INTER_CUBIC)
        tone = np.array(SKIN_TONES[k % len(SKIN_TONES)], np.float32)  # the photos are grey: tint them
        photos.append((f"lfw{i:03d}", np.clip(grey[..., None] * tone, 0, 255).astype(np.uint8)))
    return photos


def _backgrounds() -> list[np.ndarray]:
    from skimage import data
    from sklearn.datasets import load_sample_image

    grey = [data.brick(), data.grass(), data.gravel()]
    return [data.coffee(), data.rocket(), load_sample_image("china.jpg"), load_sample_image("flower.jpg")] + [
        np.repeat(g[..., None], 3, axis=2) for g in grey
    ]


def _ellipse(shape: tuple[int, int], center, axes, feather: float) -> np.ndarray:
    mask = np.zeros(shape, np.float32)
    cv2.ellipse(mask, (int(center[0]), int(center[1])), (max(1, int(axes[0])), max(1, int(axes[1]))),
                0, 0, 360, 1.0, -1, cv2.LINE_AA)
    if feather > 0:
        from scipy.ndimage import gaussian_filter

        mask = gaussian_filter(mask, feather, mode="mirror", truncate=4.0).astype(np.float32)
    return mask


# MTCNN's most confident face in each shipped photo (box x1, y1, x2, y2 and the 5 landmarks: eyes, nose,
# mouth corners), measured once with dfdc's detector and rounded to 0.01 px. Kept as data so that the
# sample depends on no floating-point kernel of the machine that builds it (a test re-measures them).
PHOTO_FACES: dict[str, tuple[tuple[float, ...], tuple[tuple[float, float], ...]]] = {
    "astronaut": ((180.49, 59.5, 267.93, 174.1),
                  ((204.78, 100.88), (247.42, 104.26), (225.35, 129.26), (202.36, 139.54), (245.32, 142.24))),
    "grace_hopper": ((177.41, 111.71, 352.02, 332.55),
                     ((221.75, 192.38), (308.87, 187.96), (267.89, 239.17), (233.13, 278.15), (305.41, 274.0))),
    "cameraman": ((196.95, 115.69, 254.82, 196.36),
                  ((234.4, 146.69), (251.3, 148.67), (251.21, 168.35), (231.86, 180.95), (243.62, 181.57))),
    "lfw001": ((0.0, 0.0, 150.5, 200.0),
               ((3.33, 61.64), (89.0, 60.29), (33.02, 109.63), (7.69, 146.87), (92.65, 144.83))),
    "lfw003": ((0.0, 0.0, 155.11, 195.98),
               ((45.22, 73.9), (119.36, 71.75), (83.67, 113.47), (53.27, 149.7), (116.41, 148.41))),
    "lfw015": ((0.0, 0.0, 155.22, 188.31),
               ((53.36, 63.21), (125.11, 58.56), (97.67, 109.17), (57.84, 140.36), (124.86, 136.16))),
    "lfw018": ((8.23, 0.0, 171.41, 187.23),
               ((43.65, 68.09), (123.91, 66.39), (69.69, 112.44), (45.83, 139.6), (116.47, 137.28))),
    "lfw021": ((0.0, 0.0, 161.41, 190.81),
               ((24.02, 62.08), (97.32, 54.02), (51.36, 105.14), (35.18, 141.25), (108.07, 134.75))),
    "lfw026": ((0.0, 0.0, 157.56, 189.97),
               ((37.84, 72.55), (112.71, 64.54), (77.31, 105.25), (48.68, 149.73), (115.17, 141.73))),
    "lfw031": ((0.0, 0.0, 158.82, 199.8),
               ((26.01, 65.66), (102.82, 53.75), (64.15, 107.12), (41.6, 144.16), (115.38, 130.52))),
    "lfw035": ((0.0, 0.0, 166.72, 200.0),
               ((22.74, 60.4), (107.66, 60.76), (51.77, 103.32), (27.19, 157.78), (92.86, 160.2))),
}


def load_identities() -> list[Identity]:
    """Cut a head image around the face of every shipped photo (faces from :data:`PHOTO_FACES`)."""
    out = []
    for name, photo in _photos():
        (x1, y1, x2, y2), landmarks = PHOTO_FACES[name]
        cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
        side = int(max(x2 - x1, y2 - y1) * 1.8)
        pad = side
        padded = cv2.copyMakeBorder(photo, pad, pad, pad, pad, cv2.BORDER_REFLECT)
        x0, y0 = int(cx - side / 2), int(cy - side / 2)
        image = padded[y0 + pad : y0 + pad + side, x0 + pad : x0 + pad + side].copy()
        lm = np.asarray(landmarks, np.float32) - np.array([x0, y0], np.float32)
        alpha = _ellipse((side, side), (side / 2, side * 0.47), (side * 0.36, side * 0.47), side * 0.04)
        out.append(Identity(name, image, alpha, lm.astype(np.float32), float(max(x2 - x1, y2 - y1))))
    return out


def _affine(scale: float = 1.0, angle: float = 0.0, tx: float = 0.0, ty: float = 0.0) -> np.ndarray:
    c, s = math.cos(math.radians(angle)) * scale, math.sin(math.radians(angle)) * scale
    return np.array([[c, -s, tx], [s, c, ty], [0, 0, 1]], np.float64)


def _mul(*ms: np.ndarray) -> np.ndarray:
    """Product of 3x3 matrices in plain float arithmetic (numpy's matmul goes through BLAS, whose kernels,
    picked per CPU, may fuse multiply-adds and round differently)."""
    out = [list(map(float, row)) for row in ms[0]]
    for m in ms[1:]:
        b = [list(map(float, row)) for row in m]
        out = [[out[i][0] * b[0][j] + out[i][1] * b[1][j] + out[i][2] * b[2][j] for j in range(3)] for i in range(3)]
    return np.array(out, np.float64)


def warp(images: np.ndarray | list[np.ndarray], m: np.ndarray, size: tuple[int, int],
         reflect: bool = False) -> np.ndarray | list[np.ndarray]:
    """``images`` (same size) moved by the 3x3 matrix ``m`` (source -> frame) into a ``size`` (w, h) frame.

    Bilinear, as cv2.warpAffine, but the same on every CPU: OpenCV's warpAffine computes its
    sample positions with CPU-specific SIMD code (its AVX2 and SSE paths round differently), so
    here they are computed in numpy (exact float arithmetic) as 1/32-pixel fixed-point maps and
    sampled by cv2.remap, which with such maps gives the same uint8 and float32 values with and
    without AVX/AVX2 (tested). Without ``reflect`` the frame is zero outside the moved image,
    and only the rectangle it covers is sampled.
    """
    single = not isinstance(images, list)
    images = [images] if single else images
    w, h = size
    a, b, c = (float(v) for v in m[0])
    d, e, f = (float(v) for v in m[1])
    det = a * e - b * d
    ia, ib, id_, ie = e / det, -b / det, -d / det, a / det  # frame -> source
    ic, if_ = -(ia * c + ib * f), -(id_ * c + ie * f)
    x0, y0, x1, y1 = 0, 0, w, h
    if not reflect:  # the frame rectangle that the source covers, plus a pixel
        sh, sw = images[0].shape[:2]
        xs = [a * x + b * y + c for x, y in ((0, 0), (sw, 0), (0, sh), (sw, sh))]
        ys = [d * x + e * y + f for x, y in ((0, 0), (sw, 0), (0, sh), (sw, sh))]
        x0, y0 = max(0, math.floor(min(xs)) - 1), max(0, math.floor(min(ys)) - 1)
        x1, y1 = min(w, math.ceil(max(xs)) + 2), min(h, math.ceil(max(ys)) + 2)
    out = [np.zeros((h, w) + im.shape[2:], im.dtype) for im in images]
    if x1 > x0 and y1 > y0:
        gx = np.arange(x0, x1, dtype=np.float64)[None, :]
        gy = np.arange(y0, y1, dtype=np.float64)[:, None]
        sx = np.rint((ia * 32) * gx + ((ib * 32) * gy + ic * 32)).astype(np.int32)
        sy = np.rint((id_ * 32) * gx + ((ie * 32) * gy + if_ * 32)).astype(np.int32)
        whole = np.stack([sx >> 5, sy >> 5], axis=-1)
        if np.abs(whole).max(initial=0) >= 32000:
            raise ValueError(f"warp: source positions beyond the int16 maps' range (matrix {m.tolist()})")
        fine = ((sy & 31) << 5 | (sx & 31)).astype(np.uint16)
        border = cv2.BORDER_REFLECT if reflect else cv2.BORDER_CONSTANT
        for o, im in zip(out, images):
            o[y0:y1, x0:x1] = cv2.remap(im, whole.astype(np.int16), fine, cv2.INTER_LINEAR, borderMode=border)
    return out[0] if single else out


def _camera(scene: Scene, t: float) -> np.ndarray:
    """3x3 canvas -> frame matrix at time t (seconds): smooth pan, zoom, small rotation."""
    c = scene.cam
    zoom = 1.0 + c["zoom"] * math.sin(2 * math.pi * t / c["period"] + c["phase"])
    angle = c["rot"] * math.sin(2 * math.pi * t / (c["period"] * 1.3) + c["phase"] * 2)
    px = c["pan_x"] * math.sin(2 * math.pi * t / c["period"] + c["phase"] * 3)
    py = c["pan_y"] * math.cos(2 * math.pi * t / (c["period"] * 0.8) + c["phase"])
    ch, cw = scene.background.shape[:2]
    to_origin = _affine(tx=-(cw / 2 + px), ty=-(ch / 2 + py))
    return _mul(_affine(tx=scene.width / 2, ty=scene.height / 2), _affine(zoom, angle), to_origin)


def _head_matrix(scene: Scene, place: np.ndarray, t: float, k: int) -> np.ndarray:
    bob = _affine(angle=2.0 * math.sin(2 * math.pi * t / 1.7 + k), tx=4 * math.sin(2 * math.pi * t / 2.3 + k),
                  ty=3 * math.sin(2 * math.pi * t / 1.9 + 2 * k))
    return _mul(_camera(scene, t), place, bob)


def _render_real(scene: Scene) -> Iterator[tuple[np.ndarray, list[np.ndarray]]]:
    """Yield (frame, [3x3 head->frame matrix per face]) for every frame."""
    rng = np.random.default_rng(scene.seed)
    size = (scene.width, scene.height)
    L = scene.light
    for i in range(scene.frames):
        t = i / scene.fps
        cam = _camera(scene, t)
        frame = warp(scene.background, cam, size, reflect=True).astype(np.float32)
        mats = []
        for k, (ident, place) in enumerate(scene.faces):
            m = _head_matrix(scene, place, t, k)
            head, a = warp([ident.image, ident.alpha], m, size)
            head, a = head.astype(np.float32), a[..., None]
            frame = frame * (1 - a) + head * a
            mats.append(m)
        gain = np.array([1 + a * math.sin(2 * math.pi * t / L["period"] + ph) for a, ph in zip(L["amp"], L["phase"])])
        frame = frame * gain + L["offset"] + rng.normal(0, scene.noise, frame.shape).astype(np.float32)
        yield np.clip(frame, 0, 255).astype(np.uint8), mats


def _similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 least-squares similarity (rotation, scale, shift) taking points ``src`` onto ``dst`` (Umeyama)."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    # the best rotation+scale of a onto b as one complex number: sum(conj(a) * b) / sum(|a|^2)
    re = float(np.sum(a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1]))
    im = float(np.sum(a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]))
    norm = float(np.sum(a * a))
    c, s = re / norm, im / norm
    t = md - np.array([c * ms[0] - s * ms[1], s * ms[0] + c * ms[1]])
    return np.array([[c, -s, t[0]], [s, c, t[1]], [0, 0, 1]], np.float64)


def blend_mask(ident: Identity, region: str, feather: float) -> np.ndarray:
    """Soft mask in ``ident`` image coordinates for the blended region (face, inner, mouth)."""
    lm = ident.landmarks
    d = ident.eye_dist
    eyes, nose, mouth = (lm[0] + lm[1]) / 2, lm[2], (lm[3] + lm[4]) / 2
    if region == "face":
        center, axes = (eyes + mouth) / 2 - [0, 0.1 * d], (1.05 * d, 1.4 * d)
    elif region == "inner":
        center, axes = nose, (0.85 * d, 0.95 * d)
    elif region == "mouth":
        center, axes = mouth + [0, 0.15 * d], (0.8 * d, 0.55 * d)
    else:
        raise ValueError(f"unknown blend region {region!r}; valid: {REGIONS}")
    return _ellipse(ident.alpha.shape, center, axes, feather * d)


def _colour_match(src: np.ndarray, dst: np.ndarray, mask: np.ndarray, strength: float) -> np.ndarray:
    """Move the source's per-channel mean and spread towards the target's inside the mask."""
    sel = mask > 0.5
    if sel.sum() < 16:
        return src
    s, d = src[sel], dst[sel]
    matched = (src - s.mean(0)) / (s.std(0) + 1e-3) * d.std(0) + d.mean(0)
    return strength * matched + (1 - strength) * src


@dataclass
class FakeSpec:
    source: Identity
    target: int  # index of the face in the scene that is replaced (-1: all)
    region: str
    feather: float
    sharpness: float  # source downscaled by this factor then upscaled, like a face decoder's low resolution
    colour: float  # colour-match strength in [0, 1]
    crf: int


def _render_fake(real: list[tuple[np.ndarray, list[np.ndarray]]], scene: Scene, spec: FakeSpec) -> Iterator[np.ndarray]:
    src = spec.source
    img = src.image
    if spec.sharpness < 1.0:
        h, w = img.shape[:2]
        small = cv2.resize(img, (max(8, int(w * spec.sharpness)), max(8, int(h * spec.sharpness))),
                           interpolation=cv2.INTER_AREA)
        img = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    img = img.astype(np.float32)
    mask = blend_mask(src, spec.region, spec.feather)
    targets = range(len(scene.faces)) if spec.target < 0 else [spec.target]
    align = {k: _similarity(src.landmarks, scene.faces[k][0].landmarks) for k in targets}
    size = (scene.width, scene.height)
    for frame, mats in real:
        out = frame.astype(np.float32)
        for k in targets:
            warped, a = warp([img, mask], _mul(mats[k], align[k]), size)
            warped = _colour_match(warped, out, a, spec.colour)
            out = out * (1 - a[..., None]) + warped * a[..., None]
        yield np.clip(out, 0, 255).astype(np.uint8)


def _name(rng: np.random.Generator, used: set[str]) -> str:
    letters = np.array(list(string.ascii_lowercase))
    while True:
        name = "".join(rng.choice(letters, 10)) + ".mp4"
        if name not in used:
            used.add(name)
            return name


def _scene(rng: np.random.Generator, name: str, idents: list[Identity], backgrounds: list[np.ndarray],
           width: int, height: int, seconds: float) -> Scene:
    fps = float(rng.choice(FPS))
    bg = backgrounds[int(rng.integers(len(backgrounds)))]
    cw, ch = int(width * 1.3), int(height * 1.3)
    scale_bg = max(cw / bg.shape[1], ch / bg.shape[0])
    bg = cv2.resize(bg, (int(np.ceil(bg.shape[1] * scale_bg)), int(np.ceil(bg.shape[0] * scale_bg))))
    y0, x0 = (bg.shape[0] - ch) // 2, (bg.shape[1] - cw) // 2
    bg = np.ascontiguousarray(bg[y0 : y0 + ch, x0 : x0 + cw])
    short = min(width, height)
    n = len(idents)
    xs = [0.5] if n == 1 else [0.3, 0.7]
    faces = []
    for ident, fx in zip(idents, xs):
        s = short * rng.uniform(0.22, 0.32) * (0.8 if n == 2 else 1.0) / ident.face_size
        c = ident.landmarks[2]  # nose
        pos = (cw / 2 + (fx - 0.5) * width * 0.9, ch / 2 + rng.uniform(-0.05, 0.05) * height)
        place = _mul(_affine(tx=pos[0], ty=pos[1]), _affine(s, rng.uniform(-8, 8)), _affine(tx=-c[0], ty=-c[1]))
        faces.append((ident, place))
    cam = dict(zoom=rng.uniform(0.03, 0.1), rot=rng.uniform(0.5, 3.0), pan_x=rng.uniform(0.02, 0.08) * width,
               pan_y=rng.uniform(0.01, 0.05) * height, period=rng.uniform(2.5, 5.0), phase=rng.uniform(0, 2 * np.pi))
    light = dict(amp=rng.uniform(0.02, 0.1, 3).tolist(), period=rng.uniform(2.0, 6.0),
                 phase=rng.uniform(0, 2 * np.pi, 3).tolist(), offset=float(rng.uniform(-10, 10)))
    return Scene(name, width, height, fps, int(round(seconds * fps)), int(rng.integers(18, 29)), bg, faces,
                 cam, light, float(rng.uniform(1.0, 3.5)), int(rng.integers(2**31)))


@dataclass
class SampleSummary:
    parts: int
    reals: int
    fakes: int
    identities: int
    frames: int


def _write_scene(job: tuple[Path, Scene, list[tuple[str, FakeSpec]]]) -> int:
    """Render and encode one real video and its fakes; returns the frames written."""
    part_dir, scene, fakes = job
    real = list(_render_real(scene))
    write_video(part_dir / scene.name, (f for f, _ in real), scene.fps, crf=scene.crf)
    for fake_name, spec in fakes:
        write_video(part_dir / fake_name, _render_fake(real, scene, spec), scene.fps, crf=spec.crf)
    return scene.frames * (1 + len(fakes))


def make_sample(
    out: str | Path,
    seed: int = 0,
    parts: int = 4,
    reals_per_part: int = 3,
    fakes_per_real: int = 2,
    seconds: tuple[float, float] = (2.0, 3.0),
    two_face_every: int = 4,
    progress: bool = True,
    workers: int = 2,
    resolutions: Sequence[tuple[int, int]] | None = None,
) -> SampleSummary:
    """Write ``out/dfdc_train_part_K/{*.mp4, metadata.json}`` deterministically for ``seed``.

    Every ``two_face_every``-th real video holds two faces; the real videos take their (width, height) in turn
    from ``resolutions`` (default: a mix of landscape and portrait sizes up to 854 px). Every random choice
    is drawn first, in order; then ``workers`` threads render and encode the
    scenes, so the files do not depend on ``workers`` (nor, through x264's fixed
    thread count and machine-independent arithmetic, on the machine).
    ``metadata.json`` carries, besides DFDC's keys, ``dataset: sample`` and for
    each fake its manipulation: ``method`` (the blend region), ``sharpness``,
    ``feather`` and ``colour``.
    """
    idents = load_identities()
    backgrounds = _backgrounds()
    rng = np.random.default_rng(seed)
    used: set[str] = set()
    n_real = parts * reals_per_part
    frames_written = 0
    with atomic_path(out, is_dir=True) as tmp:
        jobs, metas = [], []
        for p in range(parts):
            part_dir = tmp / f"dfdc_train_part_{p}"
            part_dir.mkdir(parents=True)
            meta: dict[str, dict] = {}
            for r in range(reals_per_part):
                k = p * reals_per_part + r
                sizes = resolutions or RESOLUTIONS
                width, height = sizes[k % len(sizes)]
                two = two_face_every > 0 and k % two_face_every == two_face_every - 1
                cast = [idents[k % len(idents)]]
                if two:
                    cast.append(idents[(k + 1 + int(rng.integers(len(idents) - 1))) % len(idents)])
                    if cast[1] is cast[0]:
                        cast[1] = idents[(k + 1) % len(idents)]
                name = _name(rng, used)
                scene = _scene(rng, name, cast, backgrounds, width, height, rng.uniform(*seconds))
                meta[name] = {"label": "REAL", "split": "train", "dataset": "sample"}
                fakes = []
                for j in range(fakes_per_real):
                    others = [i for i in idents if all(i is not c for c in cast)]
                    spec = FakeSpec(
                        source=others[int(rng.integers(len(others)))],
                        target=-1 if (two and j % 2 == 1) else int(rng.integers(len(cast))),
                        region=REGIONS[(k + j) % len(REGIONS)],
                        feather=float(rng.choice([0.03, 0.08, 0.15])),
                        sharpness=float(rng.choice([0.5, 0.35, 0.25])),
                        colour=float(rng.uniform(0.5, 0.9)),
                        crf=int(np.clip(scene.crf + rng.integers(-2, 3), 15, 35)),
                    )
                    fake_name = _name(rng, used)
                    fakes.append((fake_name, spec))
                    meta[fake_name] = {"label": "FAKE", "split": "train", "original": name, "dataset": "sample",
                                       "method": spec.region, "sharpness": spec.sharpness,
                                       "feather": spec.feather, "colour": round(spec.colour, 4)}
                jobs.append((part_dir, scene, fakes))
            metas.append((part_dir, meta))
        bar = tqdm(total=n_real * (1 + fakes_per_real), desc="sample", unit="video", disable=not progress)
        for (_, _, fakes), frames in zip(jobs, prefetch_map(_write_scene, jobs, workers, ahead=1)):
            frames_written += frames
            bar.update(1 + len(fakes))
        bar.close()
        for part_dir, meta in metas:
            (part_dir / "metadata.json").write_text(json.dumps(meta, indent=1, sort_keys=True) + "\n")
    return SampleSummary(parts, n_real, n_real * fakes_per_real, len(idents), frames_written)
