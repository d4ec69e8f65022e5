"""Scene graphs of the world: sampling a description for a category, laying it out, and
rendering it (with optional perturbations that lower a defined image quality).

A Description is what a caption says (mentions of objects with their attributes, counts
and relations); a Scene is one layout that satisfies it (every object with its exact
shape, color, size, position and centre). Pure: numpy and PIL only.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from agfsync.core.seeds import derive_seed
from agfsync.world.grammar import (
    BACKGROUND_LEVELS, CATEGORIES, COLORS, HELD_OUT_PAIRS, IMAGE_SIZE, JITTER, POSITIONS, SHAPES, SIZES, relation_holds,
)


def rng_for(seed: int, *identity) -> random.Random:
    """The world's random stream for (seed, identity): every draw of scenes, prompts and
    training batches comes from one of these."""
    return random.Random(derive_seed(seed, "world", *identity))


SUPERSAMPLE = 4


@dataclasses.dataclass(frozen=True)
class Obj:
    shape: str
    color: str
    size: str
    position: str
    x: float
    y: float

    @property
    def xy(self) -> tuple[float, float]:
        return (self.x, self.y)


@dataclasses.dataclass(frozen=True)
class Mention:
    """One noun phrase of a caption: `count` objects of this color and shape; size and
    position are None when the caption does not say them."""
    color: str
    shape: str
    count: int = 1
    size: str | None = None
    position: str | None = None


@dataclasses.dataclass(frozen=True)
class Description:
    category: str
    mentions: tuple[Mention, ...]
    relations: tuple[tuple[int, str, int], ...] = ()  # (mention a, relation, mention b)

    def pairs(self) -> set[tuple[str, str]]:
        return {(m.color, m.shape) for m in self.mentions}


@dataclasses.dataclass(frozen=True)
class Scene:
    objects: tuple[Obj, ...]
    background: int  # gray level

    def to_json(self) -> dict:
        return {"background": self.background, "objects": [dataclasses.asdict(o) for o in self.objects]}


# ----------------------------------------------------------------------------- sampling


def _pair(rng: random.Random, used: set, split: str) -> tuple[str, str]:
    for _ in range(1000):
        pair = (rng.choice(list(COLORS)), rng.choice(SHAPES))
        if pair in used or (split == "seen" and pair in HELD_OUT_PAIRS):
            continue
        return pair
    raise RuntimeError("no color-shape pair left to draw")


def sample_description(rng: random.Random, category: str, split: str = "any") -> Description:
    """A description of `category`. split: "seen" never uses a held-out color-shape pair,
    "unseen" uses at least one, "any" either."""
    if category not in CATEGORIES:
        raise ValueError(f"unknown world category {category!r} (expected one of {', '.join(CATEGORIES)})")
    if split not in ("seen", "unseen", "any"):
        raise ValueError(f"unknown split {split!r} (expected seen, unseen or any)")
    used: set = set()
    draw = "any" if split == "unseen" else split

    def pair():
        p = _pair(rng, used, draw)
        used.add(p)
        return p

    relations: tuple = ()
    if category == "single_object":
        c, s = pair()
        mentions = (Mention(c, s, 1, rng.choice([None, *SIZES]), rng.choice([None, None, *POSITIONS])),)
    elif category == "colors":
        (c1, s1), (c2, s2) = pair(), pair()
        while c2 == c1:
            used.discard((c2, s2))
            c2, s2 = pair()
        mentions = (Mention(c1, s1), Mention(c2, s2))
    elif category == "counting":
        c, s = pair()
        mentions = (Mention(c, s, rng.choice([2, 2, 3]), rng.choice([None, None, *SIZES])),)
        if mentions[0].count == 2 and rng.random() < 0.4:
            mentions += (Mention(*pair()),)
    elif category == "spatial":
        mentions = (Mention(*pair()), Mention(*pair()))
        relations = ((0, rng.choice(["left of", "right of", "above", "below"]), 1),)
    elif category == "sizes":
        small_first = rng.random() < 0.5
        mentions = (Mention(*pair(), size="small" if small_first else "large"),
                    Mention(*pair(), size="large" if small_first else "small"))
    else:  # multiple_objects
        mentions = tuple(Mention(*pair()) for _ in range(3))
    description = Description(category, mentions, relations)
    if split == "unseen" and not description.pairs() & HELD_OUT_PAIRS:
        return sample_description(rng, category, split)
    return description


def _box(obj_size: str, x: float, y: float) -> tuple[float, float, float, float]:
    r = SIZES[obj_size]
    return (x - r, y - r, x + r, y + r)


def _apart(a, b, gap: float = 2.0) -> bool:
    return a[2] + gap <= b[0] or b[2] + gap <= a[0] or a[3] + gap <= b[1] or b[3] + gap <= a[1]


def layout(description: Description, rng: random.Random, attempts: int = 200) -> Scene | None:
    """A scene satisfying `description` (positions distinct, boxes apart, relations
    holding), or None when none was found in `attempts` draws."""
    instances = [(i, m) for i, m in enumerate(description.mentions) for _ in range(m.count)]
    for _ in range(attempts):
        positions = rng.sample(list(POSITIONS), len(instances))
        objects, ok = [], True
        for (i, m), pos in zip(instances, positions):
            if m.position is not None and pos != m.position:
                ok = False
                break
            size = m.size or rng.choice(list(SIZES))
            ax, ay = POSITIONS[pos]
            objects.append(Obj(m.shape, m.color, size, pos, ax + rng.uniform(-JITTER, JITTER),
                               ay + rng.uniform(-JITTER, JITTER)))
        if not ok:
            continue
        boxes = [_box(o.size, o.x, o.y) for o in objects]
        if any(b[0] < 0 or b[1] < 0 or b[2] > IMAGE_SIZE - 1 or b[3] > IMAGE_SIZE - 1 for b in boxes):
            continue
        if not all(_apart(boxes[p], boxes[q]) for p in range(len(boxes)) for q in range(p + 1, len(boxes))):
            continue
        owner = [i for i, _ in instances]
        if all(relation_holds(rel, objects[p].xy, objects[q].xy)
               for a, rel, b in description.relations
               for p in range(len(objects)) if owner[p] == a
               for q in range(len(objects)) if owner[q] == b):
            return Scene(tuple(objects), rng.randint(*BACKGROUND_LEVELS))
    return None


# The color a careless captioner names instead (the nearest hue): web captions confuse
# neighbours, so the base model learns a bias that CFG does not wash out.
CONFUSED_COLOR = {"red": "orange", "orange": "red", "yellow": "orange", "green": "blue", "blue": "purple",
                  "purple": "blue"}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above",
            "small": "large", "large": "small"}


def mislabel(description: Description, rng: random.Random) -> Description:
    """The description with ONE fact made wrong, the way web alt-text misdescribes its
    image: a mention's color (its neighbour, CONFUSED_COLOR), shape, count (2 <-> 3) or
    stated size or position, or a relation reversed. The fact is chosen uniformly among
    those the caption states; never a held-out color-shape pair (the unseen split stays
    unseen: such a choice leaves the fact as it was and changes the shape instead)."""
    facts = [(kind, i) for i, m in enumerate(description.mentions) for kind in ("color", "shape")]
    facts += [("count", i) for i, m in enumerate(description.mentions) if m.count > 1]
    facts += [(kind, i) for i, m in enumerate(description.mentions) for kind in ("size", "position")
              if getattr(m, kind) is not None]
    facts += [("relation", j) for j in range(len(description.relations))]
    kind, i = rng.choice(facts)
    if kind == "relation":
        relations = list(description.relations)
        a, relation, b = relations[i]
        relations[i] = (a, OPPOSITE[relation], b)
        return dataclasses.replace(description, relations=tuple(relations))
    mention = description.mentions[i]
    if kind == "color" and (CONFUSED_COLOR[mention.color], mention.shape) not in HELD_OUT_PAIRS:
        wrong = dataclasses.replace(mention, color=CONFUSED_COLOR[mention.color])
    elif kind in ("color", "shape"):
        options = [s for s in SHAPES if s != mention.shape and (mention.color, s) not in HELD_OUT_PAIRS]
        wrong = dataclasses.replace(mention, shape=rng.choice(options))
    elif kind == "count":
        wrong = dataclasses.replace(mention, count=5 - mention.count)  # 2 <-> 3
    elif kind == "size":
        wrong = dataclasses.replace(mention, size=OPPOSITE[mention.size])
    else:
        wrong = dataclasses.replace(mention, position=rng.choice([p for p in POSITIONS if p != mention.position]))
    mentions = list(description.mentions)
    mentions[i] = wrong
    return dataclasses.replace(description, mentions=tuple(mentions))


def sample_scene(rng: random.Random, category: str, split: str = "any") -> tuple[Description, Scene]:
    """A description of `category` and a scene that satisfies it."""
    while True:
        description = sample_description(rng, category, split)
        scene = layout(description, rng)
        if scene is not None:
            return description, scene


# ----------------------------------------------------------------------------- rendering


def _draw(draw: ImageDraw.ImageDraw, obj: Obj, scale: int) -> None:
    r = SIZES[obj.size] * scale
    x, y = obj.x * scale, obj.y * scale
    fill = COLORS[obj.color]
    if obj.shape == "circle":
        draw.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif obj.shape == "square":
        draw.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    else:
        draw.polygon([(x - r, y + r), (x + r, y + r), (x, y - r)], fill=fill)


def render(scene: Scene) -> Image.Image:
    """The scene at IMAGE_SIZE x IMAGE_SIZE, anti-aliased (drawn at 4x, box-downsampled)."""
    big = IMAGE_SIZE * SUPERSAMPLE
    image = Image.new("RGB", (big, big), (scene.background,) * 3)
    draw = ImageDraw.Draw(image)
    for obj in scene.objects:
        _draw(draw, obj, SUPERSAMPLE)
    return image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BOX)


# ----------------------------------------------------------------------------- quality

PERTURBATIONS = ("blur", "noise", "occlusion", "washout")


def perturb(scene: Scene, rng: random.Random, kinds: tuple[str, ...] | None = None) -> tuple[Image.Image, float]:
    """A render of `scene` degraded by `kinds` (default: 0-2 drawn at random), and its
    quality on 1..10: 10 for a clean render, minus a penalty per degradation (blur by its
    radius, noise by its std, occlusion by the hidden fraction of an object, washout by
    how much of the color is lost)."""
    if kinds is None:
        kinds = tuple(rng.sample(PERTURBATIONS, rng.choice([0, 1, 1, 2])))
    for kind in kinds:
        if kind not in PERTURBATIONS:
            raise ValueError(f"unknown perturbation {kind!r} (expected one of {', '.join(PERTURBATIONS)})")
    quality = 10.0
    image = render(scene)
    if "occlusion" in kinds and scene.objects:
        obj = rng.choice(scene.objects)
        x0, y0, x1, y1 = _box(obj.size, obj.x, obj.y)
        frac = rng.uniform(0.25, 0.6)
        cut = (x1 - x0) * frac
        side = rng.choice(["left", "right", "top", "bottom"])
        rect = {"left": (x0 - 1, y0 - 1, x0 + cut, y1 + 1), "right": (x1 - cut, y0 - 1, x1 + 1, y1 + 1),
                "top": (x0 - 1, y0 - 1, x1 + 1, y0 + cut), "bottom": (x0 - 1, y1 - cut, x1 + 1, y1 + 1)}[side]
        ImageDraw.Draw(image).rectangle(rect, fill=(scene.background,) * 3)
        quality -= 7.0 * frac
    if "washout" in kinds:
        alpha = rng.uniform(0.2, 0.5)
        image = Image.blend(image, Image.new("RGB", image.size, (scene.background,) * 3), alpha)
        quality -= 8.0 * alpha
    if "blur" in kinds:
        radius = rng.uniform(0.6, 1.8)
        image = image.filter(ImageFilter.GaussianBlur(radius))
        quality -= 2.5 * radius
    if "noise" in kinds:
        std = rng.uniform(6.0, 30.0)
        noise = np.random.default_rng(rng.getrandbits(32)).normal(0.0, std, (IMAGE_SIZE, IMAGE_SIZE, 3))
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8))
        quality -= std / 6.0
    return image, max(1.0, quality)
