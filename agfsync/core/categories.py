"""The 12 prompt categories of the paper (stage 1a) and their instructions to the LLM, and
the 6 categories of the miniature world (agfsync.world, docs/world.md) for world runs.

Pure data (no torch, no LLM client): config validation and shard counting read the names,
the prompt stage reads the focus and examples. The table follows the paper's category
list (docs/method.md, "Prompts"); the focus lines and five examples per category are ours.

World categories are named `world/<name>` (`prompts.categories: [world/single_object,
world/colors, ...]`); null stays the paper's 12. Their examples are captions written once
by agfsync.world.captions.caption and pasted here (core imports nothing of the world wing;
tests/test_world_writer.py checks that the names match agfsync.world.grammar.CATEGORIES and
that every example parses back with agfsync.world.captions.parse).
"""

from __future__ import annotations

import dataclasses
import re


@dataclasses.dataclass(frozen=True)
class Category:
    name: str
    focus: str
    examples: tuple[str, ...]

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "_", self.name.lower()).strip("_")


_CATEGORIES = (
    Category(
        "Natural Landscapes",
        "mountains, coasts, forests, deserts, rivers, skies, weather and seasons",
        (
            "A turquoise glacial lake beneath jagged snow-capped peaks, pine trees along the shore, early morning mist",
            "Rolling sand dunes at sunset with long shadows and a single set of footprints leading to the horizon",
            "A waterfall cascading over mossy black basalt cliffs into a green pool",
            "Autumn forest path covered in orange leaves, sunlight filtering through birch trees",
            "Lightning over a flat prairie under purple storm clouds",
        ),
    ),
    Category(
        "Cities & Architecture",
        "streets, skylines, buildings, interiors, bridges and historic or modern architecture",
        (
            "A narrow cobblestone street in Lisbon lined with blue tiled houses and a yellow tram",
            "Night skyline of glass skyscrapers reflected in a calm river",
            "The vaulted stone ceiling of a gothic cathedral with stained glass windows casting colored light",
            "A modern concrete library with a spiral staircase and floor-to-ceiling windows",
            "A red brick row of townhouses with white window frames and flower boxes",
        ),
    ),
    Category(
        "People",
        "portraits, everyday activities, professions, groups, clothing and expressions",
        (
            "An elderly fisherman mending a net on a wooden pier, wearing a yellow raincoat",
            "Two children laughing while flying a red kite on a grassy hill",
            "A chef in a white uniform plating a dessert in a busy restaurant kitchen",
            "A woman reading a book on a park bench under a cherry tree in bloom",
            "A street musician playing a saxophone under a lamppost at dusk",
        ),
    ),
    Category(
        "Animals",
        "wild and domestic animals, their behaviour, habitats and counts",
        (
            "A red fox curled up asleep in fresh snow, its tail over its nose",
            "Three ducklings following their mother across a pond",
            "A tabby cat stretching on a sunny windowsill next to a potted plant",
            "A humpback whale breaching beside a small sailboat",
            "Two giraffes standing under an acacia tree on the savanna",
        ),
    ),
    Category(
        "Plants",
        "flowers, trees, gardens, crops, houseplants and botanical details",
        (
            "A field of sunflowers facing the morning sun with a red barn in the distance",
            "Close-up of dew drops on a green fern leaf",
            "A bonsai pine tree in a blue ceramic pot on a wooden table",
            "A greenhouse full of hanging orchids in pink and white",
            "An ancient oak tree alone in a meadow of wildflowers",
        ),
    ),
    Category(
        "Food & Beverages",
        "dishes, ingredients, drinks, markets, cooking and table settings",
        (
            "A stack of fluffy pancakes with blueberries and maple syrup on a white plate",
            "A steaming bowl of ramen with a soft-boiled egg, scallions and nori",
            "A glass of iced lemonade with mint leaves on a wooden porch railing",
            "A market stall piled with red tomatoes, green peppers and purple eggplants",
            "A slice of chocolate cake with a raspberry on top beside a cup of espresso",
        ),
    ),
    Category(
        "Sports & Fitness",
        "athletes, games, stadiums, training, outdoor and indoor sports",
        (
            "A surfer riding the curl of a large blue wave",
            "A basketball player mid-jump dunking the ball in an indoor arena",
            "A yoga class on a rooftop at sunrise, everyone in warrior pose",
            "A cyclist in a green jersey climbing a winding mountain road",
            "Two tennis players shaking hands over the net on a clay court",
        ),
    ),
    Category(
        "Art & Culture",
        "paintings, sculpture, music, dance, festivals, traditions and art styles",
        (
            "A watercolor painting of a harbor with small fishing boats",
            "A marble statue of a dancer in a sunlit museum hall",
            "Paper lanterns glowing over a crowded night market during a festival",
            "A violinist performing on a stage lit by a single spotlight",
            "A mosaic of a peacock made from blue and green glass tiles",
        ),
    ),
    Category(
        "Technology & Industry",
        "machines, electronics, factories, laboratories, energy and engineering",
        (
            "A robotic arm assembling a car in a brightly lit factory",
            "Rows of wind turbines on green hills under a cloudy sky",
            "A laptop, a mechanical keyboard and two monitors on a tidy desk",
            "A scientist in a white coat looking into a microscope in a laboratory",
            "A vintage steam locomotive engine with brass gauges and pipes",
        ),
    ),
    Category(
        "Everyday Objects",
        "household items, tools, furniture, clothing and things on tables or shelves",
        (
            "A blue ceramic mug of coffee next to an open notebook and a pencil",
            "A pair of worn leather boots by a front door",
            "A wooden shelf with three potted succulents and a stack of books",
            "An old brass key lying on a red velvet cloth",
            "A yellow umbrella leaning against a white wall",
        ),
    ),
    Category(
        "Transportation",
        "cars, trains, boats, aircraft, bicycles, roads, stations and ports",
        (
            "A red double-decker bus crossing a bridge in the rain",
            "A small seaplane floating on a calm lake surrounded by pine forest",
            "A row of colorful bicycles parked along a canal",
            "A high-speed train passing a field of rapeseed flowers",
            "A cargo ship loaded with stacked containers entering a harbor at dusk",
        ),
    ),
    Category(
        "Abstract & Conceptual",
        "visual metaphors, surreal scenes, patterns, shapes and concepts shown as images",
        (
            "A clock melting over the edge of a table in a desert, surreal style",
            "Swirling ribbons of blue and gold paint forming a spiral",
            "A staircase leading up into the clouds with doors floating in the sky",
            "A light bulb containing a tiny green forest",
            "Geometric cubes in pastel colors balanced on top of each other",
        ),
    ),
)

WORLD_PREFIX = "world/"
_WORLD = (
    Category(
        "world/single_object",
        "one shape (circle, square or triangle) of one color, sometimes with its size or its place in the image",
        (
            "a picture of a green triangle in the center",
            "a simple drawing of a big yellow square at the right side",
            "an image of a crimson square at the bottom",
            "a small crimson square on a gray background",
            "a photo of a large yellow disc",
        ),
    ),
    Category(
        "world/colors",
        "two shapes of two different colors",
        (
            "a rendering of a purple square together with a yellow disc",
            "a photo of a purple box and also a yellow round dot on a gray background",
            "a picture of a green triangle together with a yellow round dot",
            "this image shows a red box as well as a yellow box on a plain background",
            "a picture of a yellow disc together with a violet square on a plain background",
        ),
    ),
    Category(
        "world/counting",
        "two or three shapes alike (same color and shape), sometimes next to one other shape",
        (
            "a photo of three large red discs on a plain background",
            "this image shows three orange squares",
            "a picture of two tiny violet triangles and also a yellow triangle on a plain background",
            "an image of two green triangles and also a violet box",
            "a simple drawing of three crimson round dots on a gray background",
        ),
    ),
    Category(
        "world/spatial",
        "two shapes and where one is relative to the other: left of, right of, above or below",
        (
            "a picture of a yellow square above a violet triangle on a gray background",
            "a red square to the left of a green round dot",
            "a photo of a violet round dot beneath a green triangle on a gray background",
            "a blue triangle to the right of a blue box",
            "a yellow triangle under a purple box",
        ),
    ),
    Category(
        "world/sizes",
        "two shapes, one small and one large",
        (
            "a rendering of a big crimson round dot and a small purple box",
            "a tiny orange square together with a big yellow box",
            "a simple drawing of a big yellow disc and also a little crimson square",
            "a rendering of a little purple circle and a big yellow triangle",
            "an image of a small blue triangle and also a big orange triangle",
        ),
    ),
    Category(
        "world/multiple_objects",
        "three shapes, each with its color",
        (
            "a simple drawing of an orange triangle, a yellow square together with a green triangle on a gray background",
            "an image of a crimson box, a violet triangle together with a yellow square",
            "an image of a violet circle, an orange triangle and also a crimson square",
            "this image shows a green disc, a purple triangle and also a purple circle",
            "a picture of a violet circle, a yellow triangle and also an orange square on a plain background",
        ),
    ),
)

CATEGORIES: tuple[str, ...] = tuple(c.name for c in _CATEGORIES)  # the paper's 12: the default
WORLD_CATEGORIES: tuple[str, ...] = tuple(c.name for c in _WORLD)
KNOWN_CATEGORIES: tuple[str, ...] = CATEGORIES + WORLD_CATEGORIES
_BY_NAME = {c.name: c for c in (*_CATEGORIES, *_WORLD)}


def category(name: str) -> Category:
    return _BY_NAME[name]


def category_errors(names, key: str = "prompts.categories") -> list[str]:
    """One message per name of `names` that is no category, naming the key and the valid names."""
    return [f"key '{key}[{i}]': unknown category {name!r} (known: the paper's {', '.join(CATEGORIES)}; "
            f"the world's {', '.join(WORLD_CATEGORIES)})" for i, name in enumerate(names) if name not in _BY_NAME]
