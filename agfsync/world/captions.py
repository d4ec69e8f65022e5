"""The caption writer: varied English for a Description (5-25 words), from several
templates and synonyms per attribute, so prompts read like short image descriptions;
and its inverse, `parse`, which reads a caption back into its Description (the world
writer, agfsync.world.writer, answers QA requests from it)."""

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


# ----------------------------------------------------------------------------- parsing

_NUMBERS = {"a": 1, "an": 1} | {word: n for n, word in COUNT_WORDS.items()}


def _lexicon() -> dict[tuple[str, ...], tuple[str, object]]:
    """Every phrase a caption's body may hold -> (kind, canonical value)."""
    table: dict[tuple[str, ...], tuple[str, object]] = {(w,): ("number", n) for w, n in _NUMBERS.items()}
    for kind, words in (("size", SIZE_WORDS), ("color", COLOR_WORDS), ("position", POSITION_PHRASES),
                        ("relation", RELATION_PHRASES)):
        table |= {tuple(p.split()): (kind, value) for value, phrases in words.items() for p in phrases}
    for shape, words in SHAPE_WORDS.items():
        table |= {tuple(w.split()): ("shape", (shape, False)) for w in words}
        table |= {tuple(SHAPE_PLURALS[w].split()): ("shape", (shape, True)) for w in words}
    table |= {tuple(j.split()): ("join", None) for j in JOINERS} | {(",",): ("join", None)}
    return table


_LEXICON = _lexicon()
_LONGEST = max(map(len, _LEXICON))
_PREFIXES = sorted((tuple(p.split()) for p in PREFIXES if p), key=len, reverse=True)
_SUFFIXES = sorted((tuple(s.split()) for s in SUFFIXES if s), key=len, reverse=True)


def _category(mentions: list[Mention], relations: list) -> str | None:
    """The world category whose descriptions have this structure (scenes.sample_description),
    or None when none has."""
    n, first = len(mentions), mentions[0]
    plain = all(m.size is None and m.position is None and m.count == 1 for m in mentions)
    if relations:
        return "spatial" if n == 2 and plain and relations == [(0, relations[0][1], 1)] else None
    if n == 1 and first.count == 1:
        return "single_object"
    if first.count > 1 and first.position is None and all(m == Mention(m.color, m.shape) for m in mentions[1:]):
        return "counting" if n == 1 or (n == 2 and first.count == 2) else None
    if n == 3:
        return "multiple_objects" if plain else None
    if n == 2 and all(m.count == 1 and m.position is None for m in mentions):
        if plain and first.color != mentions[1].color:
            return "colors"
        if {first.size, mentions[1].size} == {"small", "large"}:
            return "sizes"
    return None


def parse(text: str) -> Description:
    """The Description a caption states: the inverse of `caption` (every template, synonym
    and plural). The category, which a caption does not name, is the one whose structure the
    mentions have (a relation: spatial; three mentions: multiple_objects; a count of two or
    three: counting; one object: single_object; two with sizes: sizes; two of different
    colors: colors), so parse(caption(d, rng)) == d for every sampled d. ValueError naming
    the caption and the words left unparsed for text outside the grammar."""
    words = text.lower().replace(",", " , ").replace(".", " ").split()

    def fail(problem: str, rest=None) -> ValueError:
        unparsed = f"; unparsed words: {' '.join(rest)!r}" if rest is not None else ""
        return ValueError(f"caption {text!r} is outside the world's grammar: {problem}{unparsed}")

    prefix = next((p for p in _PREFIXES if tuple(words[:len(p)]) == p), ())
    suffix = next((s for s in _SUFFIXES if len(words) > len(s) and tuple(words[-len(s):]) == s), ())
    body = words[len(prefix):len(words) - len(suffix)]
    tokens, i, unknown = [], 0, []
    while i < len(body):
        size = next((k for k in range(min(_LONGEST, len(body) - i), 0, -1) if tuple(body[i:i + k]) in _LEXICON), 0)
        if size == 0:
            unknown.append(body[i])
            i += 1
            continue
        tokens.append((*_LEXICON[tuple(body[i:i + size])], i))
        i += size
    if unknown:
        raise fail("unknown words", unknown)
    mentions: list[Mention] = []
    relations: list[tuple[int, str, int]] = []
    k = 0

    def take(kind: str, optional: bool = False):
        nonlocal k
        if k < len(tokens) and tokens[k][0] == kind:
            k += 1
            return tokens[k - 1][1]
        if optional:
            return None
        got = f"{tokens[k][0]} {body[tokens[k][2]]!r}" if k < len(tokens) else "the end"
        raise fail(f"expected a {kind}, got {got}", body[tokens[k][2]:] if k < len(tokens) else body[-1:])

    while True:
        count, size, color, (shape, plural) = take("number"), take("size", True), take("color"), take("shape")
        if plural != (count > 1):
            raise fail(f"{'a plural' if plural else 'a singular'} shape after a count of {count}", body)
        mentions.append(Mention(color, shape, count, size, take("position", True)))
        if k == len(tokens):
            break
        relation = take("relation", True)
        if relation is not None:
            relations.append((len(mentions) - 1, relation, len(mentions)))
        else:
            take("join")
    category = _category(mentions, relations)
    if category is None:
        raise fail("its objects, counts and relations fit no world category")
    return Description(category, tuple(mentions), tuple(relations))
