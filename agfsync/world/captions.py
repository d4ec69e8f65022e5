"""The caption writer: varied English for a Description (5-25 words), from several
templates and synonyms per attribute, so prompts read like short image descriptions."""

from __future__ import annotations

import random

from agfsync.world.grammar import (
    COLOR_WORDS, COUNT_WORDS, POSITION_PHRASES, RELATION_PHRASES, SHAPE_PLURALS, SHAPE_WORDS, SIZE_WORDS,
)
from agfsync.world.scenes import Description, Mention

PREFIXES = ("a photo of ", "an image of ", "a picture of ", "a simple drawing of ", "a rendering of ",
            "this image shows ", "")
SUFFIXES = ("", "", "", " on a gray background", " on a plain background")
JOINERS = (" and ", " together with ", " and also ", " as well as ")
TEMPLATE_WORDS = PREFIXES + SUFFIXES + JOINERS + ("a", "an", "there is", "there are", "with")
MIN_WORDS, MAX_WORDS = 5, 25


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def noun_phrase(mention: Mention, rng: random.Random) -> str:
    words = []
    if mention.size is not None:
        words.append(rng.choice(SIZE_WORDS[mention.size]))
    words.append(rng.choice(COLOR_WORDS[mention.color]))
    shape = rng.choice(SHAPE_WORDS[mention.shape])
    words.append(SHAPE_PLURALS[shape] if mention.count > 1 else shape)
    head = COUNT_WORDS[mention.count] if mention.count > 1 else _article(words[0])
    phrase = " ".join([head, *words])
    if mention.position is not None:
        phrase += " " + rng.choice(POSITION_PHRASES[mention.position])
    return phrase


def caption(description: Description, rng: random.Random) -> str:
    """One caption of `description`; every mention appears, with exactly its attributes."""
    phrases = [noun_phrase(m, rng) for m in description.mentions]
    if description.relations:
        (a, relation, b), = description.relations
        body = f"{phrases[a]} {rng.choice(RELATION_PHRASES[relation])} {phrases[b]}"
    elif len(phrases) == 3:
        body = f"{phrases[0]}, {phrases[1]}{rng.choice(JOINERS)}{phrases[2]}"
    else:
        body = rng.choice(JOINERS).join(phrases)
    text = rng.choice(PREFIXES) + body + rng.choice(SUFFIXES)
    while len(text.split()) < MIN_WORDS:
        text = rng.choice([p for p in PREFIXES if p]) + body + rng.choice(SUFFIXES)
    if len(text.split()) > MAX_WORDS:
        raise AssertionError(f"caption over {MAX_WORDS} words: {text!r}")
    return text
