"""Scripted LLM behaviour shared by the stage tests."""

from __future__ import annotations

import hashlib
import json
import re

WORDS = [
    "amber", "basalt", "cedar", "dune", "ember", "fjord", "garnet", "harbor", "iris", "juniper", "kelp", "lagoon",
    "meadow", "nectar", "orchid", "pebble", "quartz", "raven", "saffron", "tundra", "umber", "velvet", "willow",
    "yarrow", "zephyr", "anchor", "bramble", "canyon", "delta", "estuary", "falcon", "glacier", "heron", "island",
    "jasper", "kestrel", "lantern", "marble", "nutmeg", "oasis", "prairie", "quill", "reef", "sierra", "thistle",
]


def description(*identity) -> str:
    """A deterministic 8-word description that shares few character trigrams with others."""
    digest = hashlib.sha256("/".join(map(str, identity)).encode()).digest()
    return "A " + " ".join(WORDS[b % len(WORDS)] for b in digest[:8])


def category_and_batch(body: dict) -> tuple[str, int]:
    system = body["messages"][0]["content"]
    user = body["messages"][1]["content"]
    cat = re.search(r"Category: (.+?) \(", system).group(1)
    batch = int(re.search(r"This is batch (\d+)", user).group(1)) - 1
    return cat, batch


def descriptions_json(cat: str, batch: int, n: int) -> str:
    return json.dumps({"descriptions": [description(cat, batch, i) for i in range(n)]})


def caption_of(body: dict) -> str:
    user = [m for m in body["messages"] if m["role"] == "user"]
    return user[1]["content"].removeprefix("Description: ")  # [0] is the few-shot example


def qa_json(caption: str, n: int = 6, extra=()) -> str:
    words = caption.split()[1:]
    qa = [
        {"element": w, "element_type": "object", "question": f"Is there a {w} ({i})?", "choices": ["yes", "no"],
         "answer": "yes"}
        for i, w in enumerate((words * 3)[:n])
    ]
    return json.dumps({"qa": qa + list(extra)})


def settings(cfg: dict, rule: str | None = None, **wildcards):
    """The typed settings of a (validated) config dict, as the stages take them. With a rule:
    only what that rule declares (agfsync.core.dag.DECLARED), exactly as its workflow job sees
    them, so a stage that reads an undeclared key fails here, in its unit test."""
    import copy

    from agfsync.core import dag
    from agfsync.core.config import check_config
    from agfsync.core.sections import Settings

    cfg = check_config(copy.deepcopy(cfg), source="test config")  # defaults filled, as a workflow's config
    return dag.stage_settings(cfg, rule, **wildcards) if rule else Settings.from_dict(cfg)


def on_tiny_models(demo_config: dict, tiny_models) -> dict:
    """A copy of the tiny config whose models and scorers are the tiny models built at `tiny_models`."""
    import copy

    cfg = copy.deepcopy(demo_config)
    root = str(tiny_models)
    cfg["models"]["sd15"]["pretrained"] = f"{root}/sd1"
    cfg["models"]["sdxl"]["pretrained"] = f"{root}/sdxl"
    cfg["scores"]["vqa"]["model"] = f"{root}/blip2"
    cfg["scores"]["clip"]["model"] = f"{root}/clip"
    cfg["scores"]["aesthetic"].update(backbone=f"{root}/aesthetic/backbone", head=f"{root}/aesthetic/head.pth")
    cfg["eval"]["hpsv2"].update(model_config=f"{root}/hps/agfsync-tiny-ViT.json", checkpoint=f"{root}/hps/HPS_tiny.pt")
    cfg["eval"]["mjhq"]["features"] = f"{root}/fid"
    cfg["eval"]["tifa"]["sbert"] = f"{root}/sbert"
    cfg["eval"]["pickscore"].update(model=f"{root}/clip", processor=f"{root}/clip")
    cfg["eval"]["imagereward"].update(checkpoint=f"{root}/imagereward/ImageReward.pt",
                                      med_config=f"{root}/imagereward/med_config.json",
                                      tokenizer=f"{root}/imagereward/tokenizer")
    cfg["eval"]["hpsv21"].update(model_config=f"{root}/hps/agfsync-tiny-ViT.json", checkpoint=f"{root}/hps/HPS_tiny.pt")
    cfg["eval"]["vqascore"]["model"] = f"{root}/blip2"
    cfg["candidates"]["attention"] = "sdpa"
    return cfg
