"""The world's question writer, its answer logic and the oracle (docs/world_oracle.md):
hand-drawn images with known answers, malformed records, the questions/scene-graph
consistency over thousands of scenes, and the oracle's accuracy on clean and degraded
renders."""

from __future__ import annotations

import random
import time

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter

from agfsync.world import grammar, oracle, scenes
from agfsync.world.grammar import CATEGORIES, COLORS, POSITIONS, SIZES
from agfsync.world.questions import UNRECOGNISED, Query, Ref, answer_objects, parse, questions, training_questions, truth
from agfsync.world.scenes import Obj

GRAY = 190
YN = ["yes", "no"]


def canvas(background: int = GRAY):
    image = Image.new("RGB", (64, 64), (background,) * 3)
    return image, ImageDraw.Draw(image)


def draw(d: ImageDraw.ImageDraw, shape: str, color: str, size: str, x: float, y: float) -> None:
    """A shape drawn directly at 1x (hard edges, not the renderer's anti-aliasing)."""
    r, fill = SIZES[size], COLORS[color]
    if shape == "circle":
        d.ellipse((x - r, y - r, x + r, y + r), fill=fill)
    elif shape == "square":
        d.rectangle((x - r, y - r, x + r, y + r), fill=fill)
    else:
        d.polygon([(x - r, y + r), (x + r, y + r), (x, y - r)], fill=fill)


def image_of(*objects, background: int = GRAY) -> Image.Image:
    """objects: (shape, color, size, position); each drawn at its anchor (its pixel
    centre lies half a pixel off the anchor in PIL's convention)."""
    image, d = canvas(background)
    for shape, color, size, position in objects:
        draw(d, shape, color, size, *POSITIONS[position])
    return image


def attrs(found) -> list[tuple]:
    return sorted((o.shape, o.color, o.size, o.position) for o in found)


def q(question: str, choices=None, answer=None, element_type="object") -> dict:
    choices = choices or YN
    return {"question": question, "choices": choices, "answer": answer or choices[0], "element": "x",
            "element_type": element_type}


# ----------------------------------------------------------------------------- reading hand-made images


@pytest.mark.parametrize("shape", grammar.SHAPES)
@pytest.mark.parametrize("size", list(SIZES))
@pytest.mark.parametrize("position", list(POSITIONS))
def test_each_shape_size_and_position_is_read(shape, size, position):
    assert attrs(oracle.read(image_of((shape, "red", size, position)))) == [(shape, "red", size, position)]


@pytest.mark.parametrize("color", list(COLORS))
@pytest.mark.parametrize("background", (150, 200, 235))  # wider than the world draws
def test_each_color_is_read_on_each_background(color, background):
    found = oracle.read(image_of(("square", color, "small", "left"), ("circle", color, "large", "right"),
                                 background=background))
    assert attrs(found) == [("circle", color, "large", "right"), ("square", color, "small", "left")]


def test_arrays_are_read_like_images_and_centres_are_exact():
    image = image_of(("triangle", "green", "large", "top"))
    (found,) = oracle.read(np.asarray(image))
    assert oracle.read(image) == [found]
    assert abs(found.x - 32.5) < 0.2 and abs(found.y - 12.5) < 0.3  # the triangle's box centre, not its centroid
    with pytest.raises(ValueError, match=r"expected an RGB image of 64 x 64 x 3, got shape \(32, 32, 3\)"):
        oracle.read(np.zeros((32, 32, 3), np.uint8))
    assert oracle.read(canvas()[0]) == []


def test_an_object_off_every_anchor_has_no_position():
    image, d = canvas()
    draw(d, "circle", "blue", "small", 22, 22)  # 14 px from the centre and from top/left anchors
    (found,) = oracle.read(image)
    assert (found.shape, found.color, found.size, found.position) == ("circle", "blue", "small", None)


def test_objects_two_pixels_apart_are_two_objects_even_blurred():
    image, d = canvas()
    d.rectangle((10, 20, 20, 30), fill=COLORS["red"])
    d.rectangle((23, 20, 33, 30), fill=COLORS["orange"])  # a 2-pixel gap
    d.rectangle((36, 20, 46, 30), fill=COLORS["orange"])  # same color, 2-pixel gap
    for radius in (0, 1, 2):
        found = oracle.read(image.filter(ImageFilter.GaussianBlur(radius)) if radius else image)
        assert [(o.color, o.shape) for o in found] == [("red", "square"), ("orange", "square"), ("orange", "square")]


def test_anti_aliased_and_blurred_edges_make_no_phantom_colors():
    # a red-on-gray blend is pink-ish, a red-blue blend purple-ish: neither is an object
    image, d = canvas()
    draw(d, "circle", "red", "large", 20, 32)
    draw(d, "square", "blue", "large", 41, 32)
    for radius in (0.7, 1.5, 2.0):
        assert [o.color for o in oracle.read(image.filter(ImageFilter.GaussianBlur(radius)))] == ["red", "blue"]


def test_counting_and_relations_on_a_hand_made_image():
    image = image_of(("triangle", "yellow", "small", "left"), ("triangle", "yellow", "small", "center"),
                     ("triangle", "yellow", "large", "right"), ("circle", "red", "small", "top"))
    counts = q("How many yellow triangles are there?", ["1", "2", "3", "4"], "3", "counting")
    assert oracle.answer(image, counts) == "3"
    assert oracle.answer(image, q("How many small yellow triangles are there?", ["1", "2", "3", "4"], "2")) == "2"
    assert oracle.answer(image, q("Are there three yellow triangles?")) == "yes"
    assert oracle.answer(image, q("Is there exactly one yellow triangle?")) == "no"
    assert oracle.answer(image, q("Is the red circle above the large triangle?")) == "yes"
    assert oracle.answer(image, q("Is the red circle below the large triangle?")) == "no"
    relative = q("Where is the large triangle relative to the red circle?", ["left of", "right of", "below"], "below")
    assert oracle.answer(image, relative) == UNRECOGNISED  # right of and below both hold: no single answer
    relative = q("Where is the large triangle relative to the red circle?", ["left of", "above"], "left of")
    assert oracle.answer(image, relative) == UNRECOGNISED  # neither holds
    assert oracle.answer(image, q("Where is the red circle?", ["top", "left", "center"], "top")) == "top"
    assert oracle.accuracy(image, [counts, q("Is there a red circle?", YN, "no")]) == 0.5


def test_what_the_oracle_cannot_read_is_none_never_a_guess():
    image, d = canvas()
    d.ellipse((4, 26, 28, 38), fill=COLORS["green"])       # an ellipse: no shape of the grammar
    d.rectangle((36, 26, 60, 38), fill=COLORS["purple"])   # a rectangle (a half-hidden square)
    d.rectangle((24, 2, 40, 18), fill=(0, 0, 0))           # black: no palette color, not an object
    d.rectangle((23, 43, 42, 62), fill=(228, 85, 28))      # a square halfway between red and orange
    found = oracle.read(image)
    assert [(o.shape, o.color, o.size) for o in found] == [(None, "green", None), (None, "purple", None),
                                                           ("square", None, "large")]
    ys, xs = np.indices((64, 64))
    blob = np.exp(-((xs - 32) ** 2 + (ys - 32) ** 2) / (2 * 3.0 ** 2))[..., None]  # a soft blob, std 3 px
    (found,) = oracle.read((GRAY + blob * (np.array(COLORS["blue"]) - GRAY)).round().astype(np.uint8))
    assert (found.shape, found.color, found.size, found.position) == (None, "blue", None, "center")
    assert oracle.answer(Image.fromarray(np.zeros((64, 64, 3), np.uint8) + GRAY), q("Is there a circle?")) == "no"


# ----------------------------------------------------------------------------- answer rules


def test_answer_rules_for_unreadable_absent_and_ambiguous_referents():
    red = Obj("circle", "red", "small", "left", 12, 32)
    unreadable = Obj("circle", None, None, "right", 52, 32)
    blue = Obj("square", "blue", "large", "center", 32, 32)
    objects = [red, unreadable, blue]
    assert answer_objects(objects, q("Is there a red circle on the left?")) == "yes"
    assert answer_objects(objects, q("Is there a red circle on the right?")) == "no"
    assert answer_objects(objects, q("How many circles are there?", ["1", "2", "3"], "2")) == "2"
    assert answer_objects(objects, q("What color is the circle?", ["red", "blue"])) == UNRECOGNISED  # one unread
    assert answer_objects([red, blue], q("What color is the circle?", ["red", "blue"])) == "red"
    assert answer_objects([red, Obj("circle", "blue", "small", "top", 32, 12)],
                          q("Is the circle red?")) == UNRECOGNISED  # two circles disagree
    assert answer_objects(objects, q("Is the green square large?")) == UNRECOGNISED  # no referent
    assert answer_objects(objects, q("Is the green square to the left of the red circle?")) == "no"
    assert answer_objects(objects, q("Is the red circle to the left of the blue square?")) == "yes"
    assert answer_objects(objects, q("What size is the blue object?", ["Small", "Large"], "Large")) == "Large"
    assert answer_objects(objects, q("What color is the square?", ["red", "green"])) == UNRECOGNISED  # not a choice


def test_parse_reads_every_form():
    assert parse(q("Is there a small red circle at the top?")) == Query(
        "exists", Ref("red", "circle", "small", "top"), choices=("yes", "no"), answer="yes", element_type="object")
    assert parse(q("  is THERE an orange  object? ")).subject == Ref(color="orange")
    assert parse(q("Are there two large squares?")).value == 2
    assert parse(q("Is the red object a triangle?")).attribute == "shape"
    assert parse(q("Are the blue squares large?")).value == "large"
    rel = parse(q("Is the orange circle to the right of the purple object?"))
    assert (rel.kind, rel.relation, rel.subject, rel.other) == ("relation", "right of", Ref("orange", "circle"),
                                                                Ref(color="purple"))
    assert parse(q("What color are the circles?", ["red", "yellow", "orange"])).attribute == "color"
    assert parse(q("How many objects are there?", ["0", "1"], "0")).kind == "count"


@pytest.mark.parametrize("record, where, message", [
    (q("Is the circle magenta?"), None,
     "'Is the circle magenta?': question: unknown attribute word 'magenta' (expected a color: red, orange, "
     "yellow, green, blue, purple; or a size: small, large)"),
    (q("Is there a magenta circle?"), "record 3",
     "record 3 'Is there a magenta circle?': question: unknown word 'magenta' in 'magenta circle' "
     "(expected [size] [color] shape|object)"),
    (q("What is the meaning of life?"), None, "'What is the meaning of life?': question: not a question of the "
     "world's grammar"),
    (q("Is there a red dog?"), None, "'Is there a red dog?': question: 'dog' in 'red dog' is not a shape or 'object'"),
    (q("Are there four circles?"), None, "'Are there four circles?': question: unknown number 'four' (expected "
     "one, two, three)"),
    (q("Is there a circle?", YN, "maybe"), None, "'Is there a circle?': answer: 'maybe' is not among the choices "
     "['yes', 'no']"),
    (q("Is there a circle?", "yes/no", "yes"), None, "'Is there a circle?': choices: not a list of non-empty "
     "strings: 'yes/no'"),
    (q("What color is the circle?", ["red", "magenta"], "red"), None, "'What color is the circle?': choices: "
     "'magenta' is not a possible answer (expected red, orange, yellow, green, blue, purple)"),
    (q("What color is the circle?", ["yes", "no"]), None, "'What color is the circle?': choices: 'yes' is not a "
     "possible answer (expected red, orange, yellow, green, blue, purple)"),
    ({"question": "Is there a circle?", "choices": YN, "answer": "yes"}, "record 0",
     "record 0 'Is there a circle?': element_type: missing"),
    ({"choices": YN, "answer": "yes", "element_type": "object"}, "record 7", "record 7: question: missing"),
])
def test_bad_records_name_the_record_and_the_field(record, where, message):
    with pytest.raises(ValueError) as error:
        parse(record, where=where)
    assert str(error.value) == message


# ----------------------------------------------------------------------------- questions and the scene graph


def test_questions_agree_with_the_scene_graph_over_thousands_of_scenes():
    from agfsync.stages.qa import ELEMENT_TYPES, validate_pair

    rng = random.Random(1)
    words = set(grammar.all_words())
    counts, forms = [], set()
    for i in range(3000):
        description, scene = scenes.sample_scene(rng, CATEGORIES[i % len(CATEGORIES)])
        records = questions(description, rng)
        counts.append(len(records))
        assert len({r["question"].lower() for r in records}) == len(records)
        for r in records:
            assert truth(scene, r) == r["answer"], (description, scene, r)
            assert validate_pair(r, "multiple_choice") == (r, None) and r["element_type"] in ELEMENT_TYPES
            assert set("".join(c if c.isalnum() else " " for c in r["question"].lower()).split()) <= words
            forms.add((r["element_type"], r["choices"] == YN))
    assert min(counts) >= 3 and max(counts) <= 7 and 4 <= np.mean(counts) <= 6
    assert forms == {(t, yn) for t in ("object", "color", "counting", "shape", "spatial", "size") for yn in (True, False)
                     } - {("object", False)}
    again = random.Random(5)
    description = scenes.sample_description(again, "spatial")
    assert questions(description, random.Random(2)) == questions(description, random.Random(2))


def test_training_questions_are_true_balanced_and_varied():
    rng = random.Random(2)
    answers, kinds = [], set()
    for i in range(600):
        _, scene = scenes.sample_scene(rng, CATEGORIES[i % len(CATEGORIES)])
        records = training_questions(scene, rng, 10)
        assert len(records) == 10
        for r in records:
            assert truth(scene, r) == r["answer"] != UNRECOGNISED
            answers.append(r["answer"])
            kinds.add((parse(r).kind, parse(r).yes_no))
    yes, no = answers.count("yes"), answers.count("no")
    assert abs(yes - no) < 0.1 * (yes + no) and len(answers) - yes - no > 0.2 * len(answers)
    assert {"0", "1", "2", "3"} <= set(answers)
    assert kinds == {(k, yn) for k in ("exists", "count", "attribute", "relation") for yn in (True, False)} - {
        ("exists", False)}


# ----------------------------------------------------------------------------- accuracy on renders


def test_oracle_reads_clean_renders_of_a_thousand_scenes():
    start = time.perf_counter()
    m = oracle.measure("clean", scenes_n=1000, seed=11)
    assert m["accuracy"] >= 0.99 and m["misread"] == 0, m  # measured: 1.0000
    assert time.perf_counter() - start < 30


@pytest.mark.parametrize("kind, at_least", [
    ("blur1", 0.98), ("blur2", 0.95), ("noise10", 0.98), ("noise25", 0.95), ("washout", 0.98)])
def test_oracle_on_degraded_renders(kind, at_least):
    m = oracle.measure(kind, scenes_n=200, seed=3)  # measured over 1000 scenes: docs/world_oracle.md
    assert m["accuracy"] >= at_least, m
    assert m["misread"] <= 0.002 * m["attributes_read"], m


def test_occlusion_lowers_accuracy_without_guessing():
    m = oracle.measure("occlusion", scenes_n=200, seed=3)
    assert 0.3 <= m["accuracy"] <= 0.75, m  # measured: 0.51 over 1000 scenes
    assert m["misread"] <= 0.01 * m["attributes_read"], m  # cut large triangles seen as small ones
    with pytest.raises(ValueError, match="unknown degradation 'fog'"):
        oracle.degrade(scenes.sample_scene(random.Random(0), "colors")[1], "fog", random.Random(0))


@pytest.mark.parametrize("width, height, shape", [
    (15, 13, "square"),   # aspect 1.15, as generated squares come out: read (the first limit refused it)
    (13, 15, "square"),
    (18, 12, None),       # aspect 1.5: a rectangle, not a shape of the grammar
])
def test_a_slightly_elongated_square_is_still_a_square(width, height, shape):
    image, d = canvas()
    d.rectangle((32 - width / 2, 32 - height / 2, 32 + width / 2 - 1, 32 + height / 2 - 1), fill=COLORS["blue"])
    (found,) = oracle.read(image)
    assert (found.shape, found.color) == (shape, "blue")
