"""The oracle: reads a world image back into objects, and answers question records from
what it read (docs/world_oracle.md). Pure: numpy, PIL, scipy.ndimage.

Every pixel is modelled as a blend of the background gray g and one palette color c,
p = g + a (c - g): a red-on-gray edge is red at coverage a < 1, never a phantom pink.
Pixels covered at least half by a color (with a small residual) form connected
components per color; specks and thin bands (blends between two objects) are dropped,
and a component whose higher coverage levels fall apart is split (same-color objects
merged by blur). Each component's coverage, over a ring around it, gives its area, its
centre and normalised cumulants that a Gaussian blur leaves unchanged; shape, size,
position and color are read from those only when clearly inside one class, else None:
the oracle never guesses, and a question about an unread attribute counts as wrong.
"""

from __future__ import annotations

import dataclasses

import numpy as np
from PIL import Image
from scipy import ndimage

from agfsync.world.grammar import CATEGORIES, COLORS, IMAGE_SIZE, POSITIONS, SIZES
from agfsync.world.questions import UNRECOGNISED, answer_objects, parse, questions  # noqa: F401 (re-exported)

PALETTE = np.array(list(COLORS.values()), dtype=np.float64)
NAMES = list(COLORS)
NOISY = 3.0           # border noise (std) above which the image is smoothed first
CORE = 0.5            # coverage (of the plateau) of a component's pixels
RESIDUAL = 45.0       # max distance of a core pixel from its blend line
MIN_AREA = 12         # core pixels of the smallest object kept
RING = 3              # pixels around a component whose coverage counts toward it
POSITION_TOLERANCE = 5.0  # max distance of a centre from its anchor
SPLIT_LEVELS = (0.65, 0.8, 0.9)  # coverage levels at which a component may fall apart
EIGHT = np.ones((3, 3), dtype=bool)
SIZE_TOLERANCE = 0.3  # relative area difference from a size's area
BLURRY = 0.14         # max blur (extra variance / r^2) of an object whose shape is read
CIRCLE_CORNERS = 8.0  # max corners (x 1e-4) of a circle (clean 0; a square blurred to 16 px resolution ~ 9)
EXPLAINED = 12.0      # a ring pixel counts if its color explains it about as well as the best
# A circle or square may be this elongated, elong x 1e2 = (var y - var x) / area: 3.0 is an
# aspect ratio of about 1.2 (a 12 x 10 box is still a square; 1.5, the first choice, let
# through 1.1 only, and generated squares were refused for being 13 x 12). Asymmetry
# (skewness x 1e3) up to 8 sideways and 5 vertically passes (triangles are below -7); a
# cut or merged object is beyond.
ELONGATION, ASYMMETRY, TILT = 3.0, 8.0, 5.0
COLOR_RESIDUAL, COLOR_MARGIN = 30.0, 15.0  # a component's mean: max residual, min gap to the next color


@dataclasses.dataclass(frozen=True)
class Detected:
    shape: str | None
    color: str | None
    size: str | None
    position: str | None
    x: float
    y: float
    area: float = 0.0      # coverage, pixels
    skew: float = 0.0      # vertical skewness (triangles < 0)
    corners: float = 0.0   # diagonal minus axis kurtosis (squares > 0)
    blur: float | None = None  # extra variance / r^2 for the shape read

    @property
    def xy(self) -> tuple[float, float]:
        return (self.x, self.y)


def _array(image) -> np.ndarray:
    if isinstance(image, Image.Image):
        image = np.asarray(image.convert("RGB"))
    array = np.asarray(image, dtype=np.float64)
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"oracle: expected an RGB image of {IMAGE_SIZE} x {IMAGE_SIZE} x 3, got shape {array.shape}")
    return array


def background(array: np.ndarray) -> tuple[np.ndarray, float]:
    """(gray, noise std) from the outermost ring of pixels (objects never reach it)."""
    ring = np.concatenate([array[0], array[-1], array[1:-1, 0], array[1:-1, -1]])
    gray = np.median(ring, axis=0)
    noise = 1.4826 * float(np.median(np.abs(ring - gray)))
    return gray, noise


def blend(array: np.ndarray, gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Coverage a (H, W, K) of each palette color and the residual distance from its
    blend line g + a (c - g)."""
    d = PALETTE - gray                                    # (K, 3)
    x = array - gray                                      # (H, W, 3)
    a = np.einsum("hwc,kc->hwk", x, d) / np.einsum("kc,kc->k", d, d)
    fit = np.clip(a, 0.0, 1.0)[..., None] * d             # (H, W, K, 3)
    residual = np.linalg.norm(x[:, :, None, :] - fit, axis=-1)
    return a, residual


def _plateau(a_best: np.ndarray, fg: np.ndarray) -> float:
    """The coverage of an object's inside: 1, or less for a washed-out image (a flat
    plateau below 1 in many pixels; a blurred small object peaks below 1 but not flat)."""
    if fg.sum() < MIN_AREA:
        return 1.0
    top = float(np.percentile(a_best[fg], 99))
    flat = float(np.mean(a_best[fg] >= top - 0.06))
    return float(np.clip(top, 0.3, 1.0)) if top < 0.92 and flat >= 0.25 else 1.0


def moments(cov: np.ndarray) -> dict:
    """Descriptors of a coverage map: area A, centroid, mean axis variance, and normalised
    cumulants that a Gaussian blur leaves unchanged (it adds s^2 to every variance):
    skew = k3(y) / A^1.5, xskew = k3(x) / A^1.5, elong = (var y - var x) / A,
    corners = (k4 along the diagonals - k4 along the axes) / A^2."""
    ys, xs = np.indices(cov.shape) + 0.5
    area = float(cov.sum())
    mx, my = float((cov * xs).sum() / area), float((cov * ys).sum() / area)
    dx, dy = xs - mx, ys - my

    def m(u, p):
        return float((cov * u ** p).sum() / area)

    def k4(u):
        return (m(u, 4) - 3 * m(u, 2) ** 2) / area ** 2

    u, v = (dx + dy) / np.sqrt(2), (dx - dy) / np.sqrt(2)
    return {"area": area, "x": mx, "y": my, "var": (m(dx, 2) + m(dy, 2)) / 2, "skew": m(dy, 3) / area ** 1.5,
            "xskew": m(dx, 3) / area ** 1.5, "elong": (m(dy, 2) - m(dx, 2)) / area,
            "corners": (k4(u) + k4(v) - k4(dx) - k4(dy)) / 2}


def _shape(f: dict) -> str | None:
    """The shape whose descriptor ranges hold f (ranges measured over clean renders and
    renders blurred to radius 2 or with noise std 25; clean values in the comments), or
    None: a cut object (asymmetric, elongated) or one between classes is not read."""
    skew, xskew, elong, corners = f["skew"] * 1e3, f["xskew"] * 1e3, f["elong"] * 1e2, f["corners"] * 1e4
    if abs(xskew) > ASYMMETRY:
        return None
    if skew <= -7 and 0.3 <= elong <= 5:
        return "triangle"   # clean: skew -21, elong 2.8
    if abs(skew) > TILT or abs(elong) > ELONGATION:
        return None
    if corners >= 17:
        return "square"     # clean: 41.7
    return "circle" if -15 <= corners <= CIRCLE_CORNERS else None  # clean: 0


UNIT = {"circle": np.pi, "square": 4.0, "triangle": 2.0}  # area / r^2 (r: half the extent)
VAR = {"circle": 1 / 4, "square": 1 / 3, "triangle": (1 / 6 + 2 / 9) / 2}  # mean axis variance / r^2


def _blur(shape: str | None, f: dict) -> float | None:
    """The blur of an object read as `shape`: its variance beyond the shape's, relative to
    r^2 (a Gaussian blur of std s adds s^2 to the variance; clean ~0, blur radius 2 ~0.12)."""
    if shape is None:
        return None
    r2 = f["area"] / UNIT[shape]
    return (f["var"] - VAR[shape] * r2) / r2


def _size(shape: str | None, area: float) -> str | None:
    """small or large when the area is within 30% of that size's area for the shape."""
    if shape is None:
        return None
    return next((name for name, r in SIZES.items() if abs(area / (UNIT[shape] * r * r) - 1.0) <= SIZE_TOLERANCE), None)


def _position(x: float, y: float) -> str | None:
    name, (ax, ay) = min(POSITIONS.items(), key=lambda kv: np.hypot(kv[1][0] - x, kv[1][1] - y))
    return name if np.hypot(ax - x, ay - y) <= POSITION_TOLERANCE else None


def _color(mean: np.ndarray, gray: np.ndarray) -> str | None:
    """The palette color whose blend line passes near the component's mean color, when
    no other one comes close."""
    a, residual = blend(mean[None, None, :], gray)
    order = np.argsort(residual[0, 0])
    best, second = residual[0, 0, order[0]], residual[0, 0, order[1]]
    if a[0, 0, order[0]] < 0.3 or best > COLOR_RESIDUAL or second - best < COLOR_MARGIN:
        return None
    return NAMES[order[0]]


def _split(mask: np.ndarray, cov: np.ndarray, spread: float) -> list[np.ndarray]:
    """Same-color objects merged by blur: a blurred convex shape's coverage has convex
    (connected) level sets, so a component whose pixels above a higher level fall apart
    into several seeds holds several objects; its pixels go to the nearest seed. Only
    levels 4 noise stds (`spread`, in coverage) below 1, so noise does not split a plateau."""
    for level in [v for v in SPLIT_LEVELS if v + 4 * spread <= 1.0]:
        seeds, n = ndimage.label(mask & (cov >= level), structure=EIGHT)
        sizes = ndimage.sum_labels(np.ones_like(cov), seeds, range(1, n + 1))
        keep = [j + 1 for j, size in enumerate(sizes) if size >= 4]
        if len(keep) >= 2:
            seeds = np.where(np.isin(seeds, keep), seeds, 0)
            _, (iy, ix) = ndimage.distance_transform_edt(seeds == 0, return_indices=True)
            nearest = seeds[iy, ix]
            return [mask & (nearest == j) for j in keep]
    return [mask]


def read(image) -> list[Detected]:
    """The objects in `image` (PIL image or H x W x 3 uint8 array), in reading order."""
    array = _array(image)
    gray, noise = background(array)
    if noise > NOISY:
        smoothing = 1.0 if noise < 15 else 1.5
        array = ndimage.gaussian_filter(array, sigma=(smoothing, smoothing, 0))
        noise = background(array)[1]
    a, residual = blend(array, gray)
    best = np.argmin(np.where(a >= 0.2, residual, np.inf), axis=-1)
    a_best = np.take_along_axis(a, best[..., None], -1)[..., 0]
    r_best = np.take_along_axis(residual, best[..., None], -1)[..., 0]
    fg = (a_best >= 0.2) & (r_best <= RESIDUAL)
    plateau = _plateau(a_best, fg)
    core = fg & (a_best >= CORE * plateau)
    components = []
    for k in range(len(NAMES)):
        labels, n = ndimage.label(core & (best == k), structure=EIGHT)
        for j in range(1, n + 1):
            spread = noise / (plateau * float(np.linalg.norm(PALETTE[k] - gray)))
            for mask in _split(labels == j, a[..., k] / plateau, spread):
                if mask.sum() < MIN_AREA or ndimage.binary_erosion(mask, EIGHT).sum() < 3:
                    continue  # a speck, or a thin band (a blend between two objects)
                components.append((k, mask))
    if not components:
        return []
    # every pixel within RING of some component belongs to the nearest one
    distances = np.stack([ndimage.distance_transform_edt(~mask) for _, mask in components])
    owner = np.argmin(distances, axis=0)
    near = distances.min(axis=0) <= RING
    found = []
    for i, (k, mask) in enumerate(components):
        mine = near & (owner == i) & (residual[..., k] <= r_best + EXPLAINED)
        f = moments(np.where(mine, a[..., k] / plateau, 0.0))
        shape = _shape(f)
        blur = _blur(shape, f)
        if blur is not None and blur > BLURRY:
            shape = None  # too blurred for its size: a blob is not a circle
        size = _size(shape, f["area"])
        x, y = f["x"], f["y"]
        if shape == "triangle":  # the centroid is a third of the half-height below the centre
            y -= np.sqrt(f["area"] / 2.0) / 3.0
        color = _color(array[mask].mean(axis=0), gray)
        found.append(Detected(shape, color if color == NAMES[k] else None, size, _position(x, y), x, y,
                              f["area"], f["skew"], f["corners"], blur))
    return sorted(found, key=lambda d: (round(d.y / 8), d.x))


def answer(image, record) -> str:
    """The oracle's answer to `record` for `image`: a choice, or UNRECOGNISED."""
    return answer_objects(read(image), record)


def accuracy(image, records) -> float:
    """Fraction of `records` the oracle answers as their "answer" says."""
    if not records:
        raise ValueError("oracle.accuracy: no records")
    objects = read(image)
    queries = [parse(r, where=f"record {i}") for i, r in enumerate(records)]
    return sum(answer_objects(objects, q).lower() == q.answer.lower() for q in queries) / len(queries)


# ----------------------------------------------------------------------------- measurement

DEGRADATIONS = ("clean", "blur1", "blur2", "noise10", "noise25", "occlusion", "washout")


def degrade(scene, kind: str, rng) -> Image.Image:
    """A render of `scene`: clean, Gaussian-blurred (radius 1, 2), with Gaussian noise
    (std 10, 25), or with scenes.perturb's occlusion or washout."""
    from PIL import ImageFilter

    from agfsync.world import scenes

    if kind in ("occlusion", "washout"):
        return scenes.perturb(scene, rng, (kind,))[0]
    image = scenes.render(scene)
    if kind.startswith("blur"):
        return image.filter(ImageFilter.GaussianBlur(float(kind[4:])))
    if kind.startswith("noise"):
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, float(kind[5:]), (IMAGE_SIZE, IMAGE_SIZE, 3))
        return Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
    if kind != "clean":
        raise ValueError(f"unknown degradation {kind!r} (expected one of {', '.join(DEGRADATIONS)})")
    return image


def measure(kind: str = "clean", scenes_n: int = 1000, seed: int = 0) -> dict:
    """The oracle on `scenes_n` fresh scenes (the categories in turn) rendered with `kind`:
    accuracy over the questions() of their descriptions, and misreads: attributes read
    (not None) of the detection nearest each true object (within 6 px) that are wrong."""
    import random

    from agfsync.world import scenes

    rng = random.Random(seed)
    right = total = read_n = misread = 0
    for i in range(scenes_n):
        description, scene = scenes.sample_scene(rng, CATEGORIES[i % len(CATEGORIES)])
        records = questions(description, rng)
        found = read(degrade(scene, kind, rng))
        right += sum(answer_objects(found, r) == r["answer"] for r in records)
        total += len(records)
        for obj in scene.objects:
            near = [d for d in found if np.hypot(d.x - obj.x, d.y - obj.y) <= 6.0]
            if near:
                d = min(near, key=lambda d: np.hypot(d.x - obj.x, d.y - obj.y))
                values = [(getattr(d, a), getattr(obj, a)) for a in ("shape", "color", "size", "position")]
                read_n += sum(v is not None for v, _ in values)
                misread += sum(v is not None and v != t for v, t in values)
    return {"kind": kind, "scenes": scenes_n, "questions": total, "accuracy": right / total,
            "attributes_read": read_n, "misread": misread}


if __name__ == "__main__":  # python -m agfsync.world.oracle [--scenes N] [--seed S] [kind ...]
    import argparse

    parser = argparse.ArgumentParser(description="Measure the oracle on degraded renders.")
    parser.add_argument("kinds", nargs="*", default=list(DEGRADATIONS))
    parser.add_argument("--scenes", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    for kind in args.kinds:
        m = measure(kind, args.scenes, args.seed)
        print(f"{kind:10s} accuracy {m['accuracy']:.4f} over {m['questions']} questions ({m['scenes']} scenes); "
              f"misread {m['misread']} of {m['attributes_read']} attributes read")
