"""The 12 prompt categories of the paper (stage 1a) and their instructions to the LLM.

Pure data (no torch, no LLM client): config validation and shard counting read the names,
the prompt stage reads the focus and examples. The table follows the paper's category
list (docs/method.md, "Prompts"); the focus lines and five examples per category are ours.
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

CATEGORIES: tuple[str, ...] = tuple(c.name for c in _CATEGORIES)
_BY_NAME = {c.name: c for c in _CATEGORIES}


def category(name: str) -> Category:
    return _BY_NAME[name]
