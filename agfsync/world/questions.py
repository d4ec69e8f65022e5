"""TIFA-style questions about the world, and the answer logic (the grammar and the
answer rules: docs/world_oracle.md). Pure: no torch.

`questions` writes the records of a caption's Description (only what the caption says);
`training_questions` writes balanced questions about a Scene (absent objects, wrong
colors, false relations, counts 0-3) for training a VQA model; `parse` reads a record
back into a Query with the fixed grammar of the templates (_TEMPLATES); `answer_objects`
answers a record from objects (a scene's truth, or the oracle's detections).
"""

from __future__ import annotations

import dataclasses
import random
import re

from agfsync.world.grammar import (
    COLORS, COUNT_WORDS, OPPOSITE, POSITION_PHRASES, POSITIONS, RELATION_PHRASES, RELATIONS, SHAPES, SIZES,
    relation_holds,
)

UNRECOGNISED = "unrecognised"  # never a choice: the question counts as wrong
YES_NO = ["yes", "no"]
ATTRIBUTES = ("color", "shape", "size", "position")
VALUES = {"color": tuple(COLORS), "shape": SHAPES, "size": tuple(SIZES), "position": tuple(POSITIONS)}
POS_PHRASE = {p: POSITION_PHRASES[p][0] for p in POSITIONS}  # "on the left", "at the top", ...
REL_PHRASE = {r: RELATION_PHRASES[r][0] for r in RELATIONS}  # "to the left of", "above", ...
PLURAL = {s: s + "s" for s in SHAPES} | {"object": "objects"}
NUMBER_WORDS = {w: n for n, w in COUNT_WORDS.items()}
TEMPLATE_WORDS = ("is there a", "is there an", "is there exactly one", "are there", "how many are there",
                  "is the", "are the", "what color", "what shape", "what size", "where is the", "where are the",
                  "relative to the", "object", "objects", *POS_PHRASE.values(), *REL_PHRASE.values(), *PLURAL.values())

_KEY = {v: k for k, v in (POS_PHRASE | REL_PHRASE).items()}
_POS = "|".join(POS_PHRASE.values())
_REL = "|".join(REL_PHRASE.values())
_TEMPLATES = (  # (form, regex); the first that matches wins
    ("count_is", r"is there exactly (?P<n>one) (?P<ref>.+)"),
    ("exists", rf"is there an? (?P<ref>.+?)(?: (?P<pos>{_POS}))?"),
    ("count_is", r"are there (?P<n>\w+) (?P<ref>.+)"),
    ("count", r"how many (?P<ref>.+) are there"),
    ("relation", r"where (?:is|are) the (?P<ref>.+) relative to the (?P<other>.+)"),
    ("attribute", r"where (?:is|are) the (?P<ref>.+)"),
    ("attribute", r"what (?P<attr>color|shape|size) (?:is|are) the (?P<ref>.+)"),
    ("relation_is", rf"(?:is|are) the (?P<ref>.+?) (?P<rel>{_REL}) the (?P<other>.+)"),
    ("position_is", rf"(?:is|are) the (?P<ref>.+?) (?P<pos>{_POS})"),
    ("shape_is", r"(?:is|are) the (?P<ref>.+) an? (?P<value>[a-z]+)"),
    ("value_is", r"(?:is|are) the (?P<ref>.+) (?P<value>[a-z]+)"),
)


@dataclasses.dataclass(frozen=True)
class Ref:
    """A referring expression: the objects with all these attributes (None: not said)."""
    color: str | None = None
    shape: str | None = None
    size: str | None = None
    position: str | None = None

    def matches(self, obj) -> bool:  # an unreadable (None) attribute of obj matches nothing
        return all(getattr(obj, a) == v for a in ATTRIBUTES if (v := getattr(self, a)) is not None)

    def text(self, plural: bool = False) -> str:
        noun = self.shape or "object"
        return " ".join(w for w in (self.size, self.color, PLURAL[noun] if plural else noun) if w)


@dataclasses.dataclass(frozen=True)
class Query:
    """A parsed record. kind: exists | count | attribute | relation; `value` set for the
    yes/no forms (the asked value, count or True for relations)."""
    kind: str
    subject: Ref
    attribute: str | None = None  # attribute questions: color, shape, size or position
    relation: str | None = None   # relation yes/no questions: the relation asked
    other: Ref | None = None      # relation questions: the second referent
    value: str | int | None = None
    choices: tuple[str, ...] = ()  # as written in the record
    answer: str = ""
    element_type: str = ""

    @property
    def yes_no(self) -> bool:
        return self.kind == "exists" or self.value is not None

    def pick(self, canonical: str) -> str:
        """The record's spelling of the choice `canonical`, or UNRECOGNISED."""
        return next((c for c in self.choices if c.strip().lower() == canonical), UNRECOGNISED)


# ----------------------------------------------------------------------------- parsing

def _fail(record, where: str | None, field: str, problem: str) -> ValueError:
    question = record.get("question") if isinstance(record, dict) else None
    label = " ".join(x for x in (where, repr(question) if isinstance(question, str) else None) if x) or "record"
    return ValueError(f"{label}: {field}: {problem}")


def _ref(text: str, fail) -> Ref:
    words = text.split()
    noun = words[-1] if words else ""
    shape = noun[:-1] if noun.endswith("s") and noun[:-1] in PLURAL else noun
    if shape not in PLURAL:
        raise fail(f"{noun!r} in {text!r} is not a shape or 'object'")
    attrs: dict = {"shape": None if shape == "object" else shape}
    rest = words[:-1]
    if rest and rest[-1] in COLORS:
        attrs["color"] = rest.pop()
    if rest and rest[-1] in SIZES:
        attrs["size"] = rest.pop()
    if rest:
        raise fail(f"unknown word {rest[-1]!r} in {text!r} (expected [size] [color] shape|object)")
    return Ref(**attrs)


def parse(record, where: str | None = None) -> Query:
    """The Query of a question/answer record; ValueError naming the record and the field
    when the record is malformed or its question is outside the grammar."""
    if not isinstance(record, dict):
        raise _fail(record, where, "record", f"not an object ({type(record).__name__})")
    for field in ("question", "choices", "answer", "element_type"):
        if field not in record:
            raise _fail(record, where, field, "missing")
        if field != "choices" and not (isinstance(record[field], str) and record[field].strip()):
            raise _fail(record, where, field, f"not a non-empty string: {record[field]!r}")
    q, choices = record["question"], record["choices"]
    if not isinstance(choices, list) or not all(isinstance(c, str) and c.strip() for c in choices):
        raise _fail(record, where, "choices", f"not a list of non-empty strings: {choices!r}")
    lowered = [c.strip().lower() for c in choices]
    if len(set(lowered)) != len(lowered) or len(lowered) < 2:
        raise _fail(record, where, "choices", f"need at least 2 distinct choices, got {choices!r}")
    if record["answer"].strip().lower() not in lowered:
        raise _fail(record, where, "answer", f"{record['answer']!r} is not among the choices {choices!r}")

    def fail(problem):
        return _fail(record, where, "question", problem)

    text = " ".join(q.lower().split()).rstrip("?").rstrip()
    form, m = next(((f, m) for f, pattern in _TEMPLATES if (m := re.fullmatch(pattern, text))), (None, None))
    if m is None:
        raise fail("not a question of the world's grammar")
    g = m.groupdict()
    subject = _ref(g["ref"], fail)
    kw: dict = {}
    if form == "exists":
        kind = "exists"
        if g.get("pos"):
            subject = dataclasses.replace(subject, position=_KEY[g["pos"]])
    elif form in ("count_is", "count"):
        kind = "count"
        if form == "count_is":
            if g["n"] not in NUMBER_WORDS:
                raise fail(f"unknown number {g['n']!r} (expected {', '.join(NUMBER_WORDS)})")
            kw["value"] = NUMBER_WORDS[g["n"]]
    elif form in ("relation", "relation_is"):
        kind, kw["other"] = "relation", _ref(g["other"], fail)
        if form == "relation_is":
            kw["relation"], kw["value"] = _KEY[g["rel"]], True
    else:
        kind = "attribute"
        if form == "attribute":
            kw["attribute"] = g.get("attr") or "position"
        elif form == "position_is":
            kw["attribute"], kw["value"] = "position", _KEY[g["pos"]]
        elif form == "shape_is":
            if g["value"] not in SHAPES:
                raise fail(f"unknown shape {g['value']!r} (expected {', '.join(SHAPES)})")
            kw["attribute"], kw["value"] = "shape", g["value"]
        else:
            value = g["value"]
            attribute = "color" if value in COLORS else "size" if value in SIZES else None
            if attribute is None:
                raise fail(f"unknown attribute word {value!r} (expected a color: {', '.join(COLORS)}; "
                           f"or a size: {', '.join(SIZES)})")
            kw["attribute"], kw["value"] = attribute, value
    query = Query(kind, subject, choices=tuple(c.strip() for c in choices), answer=record["answer"].strip(),
                  element_type=record["element_type"].strip(), **kw)
    _check_choices(query, lowered, lambda p: _fail(record, where, "choices", p))
    return query


def _check_choices(query: Query, lowered: list[str], fail) -> None:
    if query.yes_no and sorted(lowered) != ["no", "yes"]:
        raise fail(f"a yes/no question needs choices ['yes', 'no'], got {list(query.choices)!r}")
    allowed = YES_NO if query.yes_no else [str(n) for n in range(10)] if query.kind == "count" else \
        RELATIONS if query.kind == "relation" else VALUES[query.attribute]
    if bad := [c for c in lowered if c not in allowed]:
        raise fail(f"{bad[0]!r} is not a possible answer (expected {', '.join(allowed)})")


# ----------------------------------------------------------------------------- answering

def _evaluate(objects, query: Query) -> str:
    found = [o for o in objects if query.subject.matches(o)]
    if query.kind == "exists":
        return query.pick("yes" if found else "no")
    if query.kind == "count":
        if query.value is not None:
            return query.pick("yes" if len(found) == query.value else "no")
        return query.pick(str(len(found)))
    if query.kind == "attribute":
        values = {getattr(o, query.attribute) for o in found}
        if len(values) != 1 or None in values:  # no referent, unreadable, or referents disagree
            return UNRECOGNISED
        (value,) = values
        return query.pick(("yes" if value == query.value else "no") if query.yes_no else value)
    others = [o for o in objects if query.other.matches(o)]
    pairs = [(a, b) for a in found for b in others if a is not b and None not in (a.x, a.y, b.x, b.y)]

    def holds(relation: str) -> bool:
        return any(relation_holds(relation, (a.x, a.y), (b.x, b.y)) for a, b in pairs)

    if query.yes_no:  # a missing referent: the relation does not hold, "no"
        return query.pick("yes" if holds(query.relation) else "no")
    holding = [c.lower() for c in query.choices if holds(c.lower())]
    return query.pick(holding[0]) if len(holding) == 1 else UNRECOGNISED


def answer_objects(objects, record) -> str:
    """The answer to `record` (a dict, or a parsed Query) given objects with .shape .color
    .size .position .x .y (None: unreadable, matches nothing): one of its choices, or
    UNRECOGNISED when the objects do not determine one."""
    return _evaluate(objects, record if isinstance(record, Query) else parse(record))


def truth(scene, record) -> str:
    return answer_objects(scene.objects, record)


# ----------------------------------------------------------------------------- writing

def _article(text: str) -> str:
    return "an" if text[0] in "aeiou" else "a"


def record(question: str, choices: list[str], answer: str, element: str, element_type: str) -> dict:
    return dict(question=question, choices=choices, answer=answer, element=element, element_type=element_type)


def ask_exists(ref: Ref) -> str:
    text = Ref(ref.color, ref.shape, ref.size).text()
    return f"Is there {_article(text)} {text}" + (f" {POS_PHRASE[ref.position]}?" if ref.position else "?")


def ask_count(ref: Ref, n: int | None = None) -> str:
    return f"How many {ref.text(True)} are there?" if n is None else f"Is there exactly one {ref.text()}?" \
        if n == 1 else f"Are there {COUNT_WORDS[n]} {ref.text(True)}?"


def ask_attribute(ref: Ref, attribute: str, value: str | None = None, plural: bool = False) -> str:
    verb, subject = ("Are", ref.text(True)) if plural else ("Is", ref.text())
    if value is None:
        return f"{'Where' if attribute == 'position' else 'What ' + attribute} {verb.lower()} the {subject}?"
    tail = {"position": POS_PHRASE.get(value), "shape": f"{_article(value)} {value}"}.get(attribute, value)
    return f"{verb} the {subject} {tail}?"


def ask_relation(a: Ref, b: Ref, relation: str | None = None) -> str:
    return f"Where is the {a.text()} relative to the {b.text()}?" if relation is None else \
        f"Is the {a.text()} {REL_PHRASE[relation]} the {b.text()}?"


def _shuffled(rng: random.Random, right: str, pool, k: int) -> list[str]:
    others = [v for v in pool if v != right]
    choices = [right, *rng.sample(others, min(k, len(others)))]
    rng.shuffle(choices)
    return choices


def _unique_refs(description, i: int, without: str | None = None) -> list[Ref]:
    """Refs over the mention's stated color/shape/size (not `without`) that can select only
    mention i's objects in any layout of the description (an unstated size may be either)."""
    mention, mentions = description.mentions[i], description.mentions
    stated = [a for a in ("color", "shape", "size") if a != without and getattr(mention, a) is not None]
    subsets = [{a: getattr(mention, a) for k, a in enumerate(stated) if mask >> k & 1}
               for mask in range(1, 2 ** len(stated))]
    return [Ref(**attrs) for attrs in subsets if all(any(getattr(m, a) not in (None, v) for a, v in attrs.items())
                                                     for j, m in enumerate(mentions) if j != i)]


def _mention_questions(description, i: int, rng: random.Random) -> list[tuple[int, dict]]:
    """(rank, record): rank 0 always asked, 1 optional, 2 only to reach 3 questions."""
    m = description.mentions[i]
    ref = Ref(m.color, m.shape, m.size if rng.random() < 0.5 else None, m.position if rng.random() < 0.5 else None)
    out = [(0, record(ask_exists(ref), list(YES_NO), "yes", m.shape, "object"))]
    mc = rng.random() < 0.5
    for attribute in ATTRIBUTES:
        value, refs = getattr(m, attribute), _unique_refs(description, i, without=attribute)
        if value is None or not refs:
            continue
        ref, element_type = rng.choice(refs), {"position": "spatial"}.get(attribute, attribute)
        if mc:
            choices = _shuffled(rng, value, VALUES[attribute], rng.choice([2, 3]))
            item = record(ask_attribute(ref, attribute, None, m.count > 1), choices, value, value, element_type)
        else:
            item = record(ask_attribute(ref, attribute, value, m.count > 1), list(YES_NO), "yes", value, element_type)
        out.append((2 if attribute == "shape" and rng.random() < 0.5 else 1, item))
        mc = not mc
    if m.count > 1 or rng.random() < 0.15:
        ref, word = rng.choice(_unique_refs(description, i)), COUNT_WORDS[m.count]
        out.append((1, record(ask_count(ref), ["1", "2", "3", "4"], str(m.count), word, "counting")
                    if rng.random() < 0.5 else record(ask_count(ref, m.count), list(YES_NO), "yes", word, "counting")))
    return out


def questions(description, rng: random.Random) -> list[dict]:
    """TIFA v1.0-style records (3-7) about what `description` states: presence, color,
    shape, count, size, position, relations; yes/no answers are "yes", multiple choice
    has the right value plus 2-3 distractors (counting: the digits 1-4)."""
    ranked = [item for i in range(len(description.mentions)) for item in _mention_questions(description, i, rng)]
    for a, relation, b in description.relations:
        ra, rb = rng.choice(_unique_refs(description, a)), rng.choice(_unique_refs(description, b))
        ranked.append((0, record(ask_relation(ra, rb), _shuffled(rng, relation, [OPPOSITE[relation]], 1), relation,
                                 relation, "spatial") if rng.random() < 0.5 else
                       record(ask_relation(ra, rb, relation), list(YES_NO), "yes", relation, "spatial")))
    chosen = [r for rank, r in ranked if rank == 0]
    optional = [r for rank, r in ranked if rank == 1]
    chosen += [optional[k] for k in sorted(rng.sample(range(len(optional)), min(len(optional), 7 - len(chosen))))]
    chosen += [r for rank, r in ranked if rank == 2][:max(0, 3 - len(chosen))]
    unique = {item["question"].lower(): item for item in reversed(chosen)}  # the first of equal questions
    return [item for item in chosen if unique[item["question"].lower()] is item]


# ----------------------------------------------------------------------------- training

def _ref_of(obj, rng: random.Random, without: str | None = None) -> Ref:
    names = [a for a in ("color", "shape", "size") if a != without]
    chosen = rng.sample(names, rng.choice([1, 2, 2, len(names)]))
    return Ref(**{a: getattr(obj, a) for a in chosen})


def _random_ref(rng: random.Random) -> Ref:
    return Ref(rng.choice(list(COLORS)), rng.choice(SHAPES), rng.choice([None, None, *SIZES]))


def _candidate(scene, rng: random.Random, want_yes: bool) -> dict:
    objs = scene.objects
    obj = rng.choice(objs) if objs else None
    kind = rng.choice(["exists", "exists", "count_is", "count", "attribute_is", "attribute", "attribute_is",
                       "relation_is", "relation"]) if obj else "exists"
    if kind == "exists":
        ref = _ref_of(obj, rng) if want_yes and obj else _random_ref(rng)
        if obj and want_yes and rng.random() < 0.25:
            ref = dataclasses.replace(ref, position=obj.position, shape=ref.shape or obj.shape)
        return record(ask_exists(ref), list(YES_NO), "yes", ref.shape or "object", "object")
    if kind in ("count_is", "count"):
        ref = _ref_of(obj, rng) if rng.random() < 0.7 else _random_ref(rng)
        true = sum(ref.matches(o) for o in objs)
        if kind == "count":
            low = rng.choice([lo for lo in (0, 1) if lo <= true <= lo + 3] or [0])
            return record(ask_count(ref), [str(k) for k in range(low, low + 4)], str(low), "count", "counting")
        n = true if want_yes and 1 <= true <= 3 else rng.choice([k for k in COUNT_WORDS if k != true])
        return record(ask_count(ref, n), list(YES_NO), "yes", COUNT_WORDS[n], "counting")
    if kind.startswith("attribute"):
        attribute = rng.choice(ATTRIBUTES)
        ref = _ref_of(obj, rng, without=attribute)
        value = getattr(obj, attribute)
        element_type = {"position": "spatial"}.get(attribute, attribute)
        plural = sum(ref.matches(o) for o in objs) > 1
        if kind == "attribute":
            choices = _shuffled(rng, value, VALUES[attribute], rng.choice([1, 2, 3]))
            return record(ask_attribute(ref, attribute, None, plural), choices, value, value, element_type)
        if not want_yes:
            value = rng.choice([v for v in VALUES[attribute] if v != value])
        return record(ask_attribute(ref, attribute, value, plural), list(YES_NO), "yes", value, element_type)
    other = rng.choice([o for o in objs if o is not obj] or [obj])
    ra, rb = _ref_of(obj, rng), (_ref_of(other, rng) if rng.random() < 0.85 else _random_ref(rng))
    holding = [r for r in RELATIONS if relation_holds(r, obj.xy, other.xy)] if other is not obj else []
    if kind == "relation" and holding:
        right = rng.choice(holding)
        choices = _shuffled(rng, right, [r for r in RELATIONS if r not in holding], rng.choice([1, 2]))
        return record(ask_relation(ra, rb), choices, right, right, "spatial")
    relation = rng.choice(holding if want_yes and holding else RELATIONS)
    return record(ask_relation(ra, rb, relation), list(YES_NO), "yes", relation, "spatial")


def training_questions(scene, rng: random.Random, n: int) -> list[dict]:
    """n records about `scene` with answers from its scene graph (never UNRECOGNISED):
    about present and absent objects, true and false attributes and relations, counts
    0-3; yes/no questions alternate between answers yes and no where the scene allows."""
    out, seen, want_yes = [], set(), True
    for _ in range(50 * n):
        if len(out) >= n:
            break
        item = _candidate(scene, rng, want_yes)
        query = parse(item)
        answer = _evaluate(scene.objects, query)
        if answer == UNRECOGNISED or item["question"] in seen:
            continue
        if query.yes_no and (answer == "yes") != want_yes and rng.random() < 0.9:
            continue
        item["answer"] = answer
        want_yes = not want_yes if query.yes_no else want_yes
        seen.add(item["question"])
        out.append(item)
    return out
