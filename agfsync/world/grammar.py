"""The world's vocabulary: colors, shapes, sizes, positions, relations, categories.

Every word a caption or question may use for an attribute is listed here, with the
canonical value it stands for; the renderer, the caption and question writers and the
oracle all read this one table.
"""

from __future__ import annotations

IMAGE_SIZE = 64

# Six saturated colors (red/orange/yellow and blue/purple are the close ones), on a
# neutral gray background. Eight (with teal and pink) were more than the tiny models
# learn in the build's budget: the VAE alone passed the oracle on 8% of questions after
# 300 steps against 26% with six (docs/world.md).
COLORS: dict[str, tuple[int, int, int]] = {
    "red": (215, 35, 35),
    "orange": (240, 135, 20),
    "yellow": (235, 215, 30),
    "green": (40, 165, 55),
    "blue": (35, 75, 215),
    "purple": (135, 55, 195),
}
SHAPES = ("circle", "square", "triangle")
# Half the side of the shape's bounding box, in pixels (square: half its side; circle:
# radius; triangle: half its base and half its height).
SIZES: dict[str, int] = {"small": 7, "large": 10}
# Anchor of each position (x, y), pixels from the top left; objects sit within JITTER.
POSITIONS: dict[str, tuple[int, int]] = {
    "left": (12, 32), "right": (52, 32), "top": (32, 12), "bottom": (32, 52), "center": (32, 32),
}
JITTER = 2
BACKGROUND_LEVELS = (190, 210)  # the background is a uniform gray in this range (the oracle reads any)

# "a is <relation> b": the relation holds when the centres differ by at least
# RELATION_MARGIN pixels along its axis.
RELATIONS = ("left of", "right of", "above", "below")
RELATION_MARGIN = 8

COUNT_WORDS = {1: "one", 2: "two", 3: "three"}

# The world's prompt categories (they replace the paper's 12 for world runs).
CATEGORIES = ("single_object", "colors", "counting", "spatial", "sizes", "multiple_objects")

# Words a caption may use for each canonical value.
COLOR_WORDS = {c: (c,) for c in COLORS} | {"red": ("red", "crimson"), "purple": ("purple", "violet")}
SHAPE_WORDS = {
    "circle": ("circle", "disc", "round dot"),
    "square": ("square", "box"),
    "triangle": ("triangle",),
}
SHAPE_PLURALS = {"circle": "circles", "disc": "discs", "round dot": "round dots", "square": "squares",
                 "box": "boxes", "triangle": "triangles"}
SIZE_WORDS = {"small": ("small", "little", "tiny"), "large": ("large", "big")}
POSITION_PHRASES = {
    "left": ("on the left", "at the left side"),
    "right": ("on the right", "at the right side"),
    "top": ("at the top", "near the top"),
    "bottom": ("at the bottom", "near the bottom"),
    "center": ("in the center", "in the middle"),
}
RELATION_PHRASES = {
    "left of": ("to the left of", "left of"),
    "right of": ("to the right of", "right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
OPPOSITE = {"left of": "right of", "right of": "left of", "above": "below", "below": "above"}


def relation_holds(relation: str, a_xy: tuple[float, float], b_xy: tuple[float, float]) -> bool:
    """Does "a <relation> b" hold for object centres a_xy and b_xy?"""
    dx, dy = b_xy[0] - a_xy[0], b_xy[1] - a_xy[1]
    return {
        "left of": dx >= RELATION_MARGIN, "right of": -dx >= RELATION_MARGIN,
        "above": dy >= RELATION_MARGIN, "below": -dy >= RELATION_MARGIN,
    }[relation]


def all_words() -> list[str]:
    """Every word captions and questions of the world use (for the tiny tokenizers)."""
    from agfsync.world import captions, questions  # noqa: F401  (their template words)

    texts = [*captions.TEMPLATE_WORDS, *questions.TEMPLATE_WORDS]
    for table in (COLOR_WORDS, SHAPE_WORDS, SIZE_WORDS, POSITION_PHRASES, RELATION_PHRASES):
        for values in table.values():
            texts += list(values)
    texts += list(SHAPE_PLURALS.values()) + list(COUNT_WORDS.values()) + [str(n) for n in range(0, 6)]
    texts += list(COLORS) + list(SHAPES) + list(SIZES) + list(POSITIONS) + ["yes", "no"]
    words: dict[str, None] = {}
    for text in texts:
        for word in "".join(ch.lower() if ch.isalnum() else " " for ch in text).split():
            words.setdefault(word, None)
    return list(words)

# Color-shape pairs that never appear in the text-to-image model's training captions:
# held-out prompts that use one test composition the model has not memorised.
HELD_OUT_PAIRS = frozenset({("red", "triangle"), ("blue", "circle"), ("green", "square"), ("orange", "circle")})
