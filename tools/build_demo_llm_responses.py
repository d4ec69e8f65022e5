"""Writes data/demo/llm_responses.jsonl: the recorded LLM answers the demo replays
(provider: file). Run it after changing this content or the request keys:

    python tools/build_demo_llm_responses.py

Content: 4 descriptions per category (one exact or near duplicate in some, which the
prompt stage drops), TIFA-style yes/no QA for every prompt, and deliberately bad answers
that exercise the repair and skip paths: a truncated JSON answer, a fenced answer, a
refusal, a wrong field name, an answer with invalid records, and a prompt that never
gets 5 valid pairs (dropped).
"""

import json
from pathlib import Path

from agfsync.stages.prompts import category, prompt_id

OUT = Path(__file__).resolve().parents[1] / "data" / "demo" / "llm_responses.jsonl"

# category -> (descriptions as the model returns them, {index: [(element, type, question), ...]})
DATA = {
    "Natural Landscapes": [
        ("A turquoise lake below snowy mountains with three pine trees on a rocky shore", [
            ("lake", "object", "Is there a lake?"), ("turquoise", "color", "Is the lake turquoise?"),
            ("mountains", "object", "Are there mountains?"), ("snowy", "attribute", "Are the mountains snowy?"),
            ("three", "counting", "Are there three pine trees?"), ("shore", "location", "Are the trees on a rocky shore?")]),
        ("Red sand dunes at sunset with long blue shadows", [
            ("dunes", "object", "Are there sand dunes?"), ("red", "color", "Is the sand red?"),
            ("sunset", "attribute", "Is it sunset?"), ("shadows", "object", "Are there long shadows?"),
            ("blue", "color", "Are the shadows blue?")]),
        ("A waterfall falling over black cliffs into a round green pool, surrounded by ferns", [
            ("waterfall", "object", "Is there a waterfall?"), ("black", "color", "Are the cliffs black?"),
            ("pool", "object", "Is there a pool?"), ("green", "color", "Is the pool green?"),
            ("round", "shape", "Is the pool round?"), ("ferns", "object", "Are there ferns around the pool?")]),
        ("A waterfall falling over black cliffs into a round green pool surrounded by ferns.", None),
    ],
    "Cities & Architecture": [
        ("A yellow tram on a narrow cobblestone street lined with blue tiled houses", [
            ("tram", "object", "Is there a tram?"), ("yellow", "color", "Is the tram yellow?"),
            ("street", "location", "Is this a street?"), ("cobblestone", "material", "Is the street cobblestone?"),
            ("houses", "object", "Are there houses along the street?"), ("blue", "color", "Are the houses blue?")]),
        ("A glass skyscraper at night reflected in a calm river, two bridges in the foreground", [
            ("skyscraper", "object", "Is there a skyscraper?"), ("glass", "material", "Is the skyscraper made of glass?"),
            ("night", "attribute", "Is it night?"), ("river", "object", "Is there a river?"),
            ("reflected", "spatial", "Is the skyscraper reflected in the river?"), ("two", "counting", "Are there two bridges?")]),
        ("A white lighthouse on a cliff above a small harbor with red roofs", [
            ("lighthouse", "object", "Is there a lighthouse?"), ("white", "color", "Is the lighthouse white?"),
            ("cliff", "location", "Is the lighthouse on a cliff?"), ("harbor", "location", "Is there a harbor?"),
            ("red", "color", "Are the roofs red?"), ("above", "spatial", "Is the lighthouse above the harbor?")]),
        ("A round stone tower covered in ivy beside a wooden gate", [
            ("tower", "object", "Is there a tower?"), ("stone", "material", "Is the tower made of stone?"),
            ("ivy", "object", "Is the tower covered in ivy?"), ("gate", "object", "Is there a gate?"),
            ("wooden", "material", "Is the gate wooden?"), ("round", "shape", "Is the tower round?")]),
    ],
    "People": [
        ("An old fisherman in a yellow raincoat mending a net on a wooden pier", [
            ("fisherman", "human", "Is there a fisherman?"), ("old", "attribute", "Is the fisherman old?"),
            ("raincoat", "object", "Is he wearing a raincoat?"), ("yellow", "color", "Is the raincoat yellow?"),
            ("mending", "activity", "Is he mending a net?"), ("pier", "location", "Is he on a pier?")]),
        ("Two children flying a red kite on a grassy hill", [
            ("children", "human", "Are there children?"), ("two", "counting", "Are there two children?"),
            ("kite", "object", "Is there a kite?"), ("red", "color", "Is the kite red?"),
            ("flying", "activity", "Are the children flying the kite?"), ("hill", "location", "Are they on a grassy hill?")]),
        ("A woman reading a book on a park bench under a pink cherry tree", [
            ("woman", "human", "Is there a woman?"), ("reading", "activity", "Is the woman reading?"),
            ("book", "object", "Is there a book?"), ("bench", "object", "Is she sitting on a bench?"),
            ("cherry tree", "object", "Is there a cherry tree?"), ("pink", "color", "Is the tree pink?"),
            ("under", "spatial", "Is the bench under the tree?")]),
        ("A chef in a white uniform slicing vegetables in a busy kitchen", [
            ("chef", "human", "Is there a chef?"), ("white", "color", "Is the uniform white?"),
            ("slicing", "activity", "Is the chef slicing vegetables?"), ("vegetables", "food", "Are there vegetables?"),
            ("kitchen", "location", "Is this a kitchen?"), ("busy", "attribute", "Is the kitchen busy?")]),
    ],
    "Animals": [
        ("A red fox curled up asleep in fresh snow", [
            ("fox", "animal", "Is there a fox?"), ("red", "color", "Is the fox red?"),
            ("asleep", "activity", "Is the fox asleep?"), ("curled up", "attribute", "Is the fox curled up?"),
            ("snow", "object", "Is there snow?")]),
        ("Three ducklings following their mother across a calm pond", [
            ("ducklings", "animal", "Are there ducklings?"), ("three", "counting", "Are there three ducklings?"),
            ("mother", "animal", "Is there a mother duck?"), ("following", "activity", "Are the ducklings following their mother?"),
            ("pond", "location", "Is there a pond?"), ("calm", "attribute", "Is the pond calm?")]),
        ("A red fox curled up asleep in the fresh snow", None),
        ("A tabby cat stretching on a sunny windowsill next to a potted cactus", [
            ("cat", "animal", "Is there a cat?"), ("tabby", "attribute", "Is the cat a tabby?"),
            ("stretching", "activity", "Is the cat stretching?"), ("windowsill", "location", "Is the cat on a windowsill?"),
            ("cactus", "object", "Is there a potted cactus?"), ("next to", "spatial", "Is the cactus next to the cat?")]),
    ],
    "Plants": [
        ("A field of sunflowers facing the morning sun with a red barn in the distance", [
            ("sunflowers", "object", "Are there sunflowers?"), ("field", "location", "Is this a field?"),
            ("sun", "object", "Is the sun visible?"), ("barn", "object", "Is there a barn?"),
            ("red", "color", "Is the barn red?"), ("distance", "spatial", "Is the barn in the distance?")]),
        ("A bonsai pine in a blue ceramic pot on a wooden table", [
            ("bonsai", "object", "Is there a bonsai tree?"), ("pot", "object", "Is there a pot?"),
            ("blue", "color", "Is the pot blue?"), ("ceramic", "material", "Is the pot ceramic?"),
            ("table", "object", "Is there a table?"), ("wooden", "material", "Is the table wooden?")]),
        ("Dew drops on a bright green fern leaf in close-up", [
            ("dew drops", "object", "Are there dew drops?"), ("fern", "object", "Is there a fern leaf?"),
            ("green", "color", "Is the leaf green?"), ("close-up", "attribute", "Is this a close-up?"),
            ("on", "spatial", "Are the drops on the leaf?")]),
        ("An old oak tree alone in a meadow of purple wildflowers", [
            ("oak tree", "object", "Is there an oak tree?"), ("old", "attribute", "Is the tree old?"),
            ("meadow", "location", "Is the tree in a meadow?"), ("wildflowers", "object", "Are there wildflowers?"),
            ("purple", "color", "Are the wildflowers purple?"), ("alone", "attribute", "Is the tree alone?")]),
    ],
    "Food & Beverages": [
        ("A stack of pancakes with blueberries and maple syrup on a white plate", [
            ("pancakes", "food", "Are there pancakes?"), ("stack", "attribute", "Are the pancakes stacked?"),
            ("blueberries", "food", "Are there blueberries?"), ("syrup", "food", "Is there syrup?"),
            ("plate", "object", "Is there a plate?"), ("white", "color", "Is the plate white?")]),
        ("A steaming bowl of ramen with a boiled egg and green onions", [
            ("bowl", "object", "Is there a bowl?"), ("ramen", "food", "Is there ramen?"),
            ("steaming", "attribute", "Is the ramen steaming?"), ("egg", "food", "Is there an egg?"),
            ("green onions", "food", "Are there green onions?")]),
        ("A glass of iced lemonade with mint leaves on a porch railing", [
            ("glass", "object", "Is there a glass?"), ("lemonade", "food", "Is there lemonade?"),
            ("ice", "food", "Is there ice in the drink?"), ("mint", "food", "Are there mint leaves?"),
            ("railing", "object", "Is the glass on a railing?"), ("glass", "material", "Is the glass made of glass?")]),
        ("A market stall piled with red tomatoes, green peppers and purple eggplants", [
            ("stall", "object", "Is there a market stall?"), ("tomatoes", "food", "Are there tomatoes?"),
            ("red", "color", "Are the tomatoes red?"), ("peppers", "food", "Are there peppers?"),
            ("green", "color", "Are the peppers green?"), ("eggplants", "food", "Are there eggplants?"),
            ("purple", "color", "Are the eggplants purple?")]),
    ],
    "Sports & Fitness": [
        ("A surfer in a black wetsuit riding a large blue wave", [
            ("surfer", "human", "Is there a surfer?"), ("wetsuit", "object", "Is the surfer wearing a wetsuit?"),
            ("black", "color", "Is the wetsuit black?"), ("riding", "activity", "Is the surfer riding a wave?"),
            ("wave", "object", "Is there a wave?"), ("blue", "color", "Is the wave blue?")]),
        ("A rooftop yoga class at sunrise with five people on mats", [
            ("yoga", "activity", "Are people doing yoga?"), ("rooftop", "location", "Is this on a rooftop?"),
            ("sunrise", "attribute", "Is it sunrise?"), ("five", "counting", "Are there five people?"),
            ("mats", "object", "Are there mats?")]),
        ("A cyclist in a green jersey climbing a winding mountain road", [
            ("cyclist", "human", "Is there a cyclist?"), ("jersey", "object", "Is the cyclist wearing a jersey?"),
            ("green", "color", "Is the jersey green?"), ("climbing", "activity", "Is the cyclist climbing?"),
            ("road", "location", "Is there a winding road?"), ("mountain", "location", "Is this in the mountains?")]),
        ("Two tennis players shaking hands over the net on a clay court", [
            ("players", "human", "Are there tennis players?"), ("two", "counting", "Are there two players?"),
            ("shaking hands", "activity", "Are they shaking hands?"), ("net", "object", "Is there a net?"),
            ("clay court", "location", "Is this a clay court?"), ("over", "spatial", "Are they shaking hands over the net?")]),
    ],
    "Art & Culture": [
        ("A watercolor painting of a harbor with small fishing boats", [
            ("painting", "object", "Is this a painting?"), ("watercolor", "attribute", "Is it a watercolor?"),
            ("harbor", "location", "Is there a harbor?"), ("boats", "object", "Are there boats?"),
            ("small", "attribute", "Are the boats small?")]),
        ("A marble statue of a dancer in a sunlit museum hall", [
            ("statue", "object", "Is there a statue?"), ("marble", "material", "Is the statue marble?"),
            ("dancer", "human", "Does the statue show a dancer?"), ("museum", "location", "Is this a museum hall?"),
            ("sunlit", "attribute", "Is the hall sunlit?")]),
        ("Paper lanterns glowing over a crowded night market", [
            ("lanterns", "object", "Are there lanterns?"), ("paper", "material", "Are the lanterns made of paper?"),
            ("glowing", "attribute", "Are the lanterns glowing?"), ("market", "location", "Is there a market?"),
            ("crowded", "attribute", "Is the market crowded?"), ("night", "attribute", "Is it night?")]),
        ("A mosaic of a peacock made from blue and green glass tiles", [
            ("mosaic", "object", "Is there a mosaic?"), ("peacock", "animal", "Does the mosaic show a peacock?"),
            ("tiles", "object", "Is it made of tiles?"), ("glass", "material", "Are the tiles glass?"),
            ("blue", "color", "Are there blue tiles?"), ("green", "color", "Are there green tiles?")]),
    ],
    "Technology & Industry": [
        ("A robotic arm assembling a car in a brightly lit factory", [
            ("robotic arm", "object", "Is there a robotic arm?"), ("car", "object", "Is there a car?"),
            ("assembling", "activity", "Is the arm assembling the car?"), ("factory", "location", "Is this a factory?"),
            ("brightly lit", "attribute", "Is the factory brightly lit?")]),
        ("Rows of white wind turbines on green hills under a cloudy sky", [
            ("wind turbines", "object", "Are there wind turbines?"), ("white", "color", "Are the turbines white?"),
            ("hills", "location", "Are there hills?"), ("green", "color", "Are the hills green?"),
            ("cloudy", "attribute", "Is the sky cloudy?"), ("rows", "spatial", "Are the turbines in rows?")]),
        ("A laptop and two monitors on a tidy desk next to a mechanical keyboard", [
            ("laptop", "object", "Is there a laptop?"), ("monitors", "object", "Are there monitors?"),
            ("two", "counting", "Are there two monitors?"), ("desk", "object", "Is there a desk?"),
            ("tidy", "attribute", "Is the desk tidy?"), ("keyboard", "object", "Is there a keyboard?")]),
        ("A scientist in a white coat looking into a microscope", [
            ("scientist", "human", "Is there a scientist?"), ("coat", "object", "Is the scientist wearing a coat?"),
            ("white", "color", "Is the coat white?"), ("microscope", "object", "Is there a microscope?"),
            ("looking", "activity", "Is the scientist looking into the microscope?")]),
    ],
    "Everyday Objects": [
        ("A blue mug of coffee next to an open notebook and a pencil", [
            ("mug", "object", "Is there a mug?"), ("blue", "color", "Is the mug blue?"),
            ("coffee", "food", "Is there coffee?"), ("notebook", "object", "Is there a notebook?"),
            ("open", "attribute", "Is the notebook open?"), ("pencil", "object", "Is there a pencil?")]),
        ("A pair of worn leather boots by a front door", [
            ("boots", "object", "Are there boots?"), ("pair", "counting", "Is there one pair of boots?"),
            ("leather", "material", "Are the boots leather?"), ("worn", "attribute", "Are the boots worn?"),
            ("door", "object", "Is there a door?"), ("by", "spatial", "Are the boots by the door?")]),
        ("A wooden shelf with three potted succulents and a stack of books", [
            ("shelf", "object", "Is there a shelf?"), ("wooden", "material", "Is the shelf wooden?"),
            ("succulents", "object", "Are there succulents?"), ("three", "counting", "Are there three succulents?"),
            ("books", "object", "Is there a stack of books?")]),
        ("A yellow umbrella leaning against a white wall", [
            ("umbrella", "object", "Is there an umbrella?"), ("yellow", "color", "Is the umbrella yellow?"),
            ("leaning", "spatial", "Is the umbrella leaning against the wall?"), ("wall", "object", "Is there a wall?"),
            ("white", "color", "Is the wall white?")]),
    ],
    "Transportation": [
        ("A red double-decker bus crossing a stone bridge in the rain", [
            ("bus", "object", "Is there a bus?"), ("red", "color", "Is the bus red?"),
            ("double-decker", "attribute", "Is the bus a double-decker?"), ("bridge", "object", "Is there a bridge?"),
            ("stone", "material", "Is the bridge stone?"), ("rain", "attribute", "Is it raining?")]),
        ("A small seaplane floating on a calm lake surrounded by pine forest", [
            ("seaplane", "object", "Is there a seaplane?"), ("small", "attribute", "Is the seaplane small?"),
            ("floating", "activity", "Is the seaplane floating?"), ("lake", "location", "Is there a lake?"),
            ("forest", "location", "Is there a pine forest?")]),
        ("A row of colorful bicycles parked along a canal", [
            ("bicycles", "object", "Are there bicycles?"), ("colorful", "color", "Are the bicycles colorful?"),
            ("parked", "activity", "Are the bicycles parked?"), ("canal", "location", "Is there a canal?"),
            ("along", "spatial", "Are the bicycles along the canal?")]),
        ("A cargo ship with stacked containers entering a harbor at dusk", [
            ("ship", "object", "Is there a ship?"), ("containers", "object", "Are there containers?"),
            ("stacked", "spatial", "Are the containers stacked?"), ("harbor", "location", "Is there a harbor?"),
            ("dusk", "attribute", "Is it dusk?")]),
    ],
    "Abstract & Conceptual": [
        ("A clock melting over the edge of a table in a desert, surreal style", [
            ("clock", "object", "Is there a clock?"), ("melting", "attribute", "Is the clock melting?"),
            ("table", "object", "Is there a table?"), ("desert", "location", "Is this in a desert?"),
            ("surreal", "attribute", "Is the style surreal?")]),
        ("A light bulb containing a tiny green forest", [
            ("light bulb", "object", "Is there a light bulb?"), ("forest", "object", "Is there a forest?"),
            ("green", "color", "Is the forest green?"), ("tiny", "attribute", "Is the forest tiny?"),
            ("inside", "spatial", "Is the forest inside the bulb?")]),
        ("Pastel cubes balanced on top of each other on a white floor", [
            ("cubes", "shape", "Are there cubes?"), ("pastel", "color", "Are the cubes pastel colored?"),
            ("balanced", "spatial", "Are the cubes balanced on each other?"), ("floor", "object", "Is there a floor?"),
            ("white", "color", "Is the floor white?")]),
        ("A staircase rising into the clouds with doors floating in the sky", [
            ("staircase", "object", "Is there a staircase?"), ("clouds", "object", "Are there clouds?"),
            ("doors", "object", "Are there doors?"), ("floating", "spatial", "Are the doors floating?"),
            ("sky", "location", "Is the staircase rising into the sky?")]),
    ],
}


def qa_json(items, extra=()):
    qa = [{"element": e, "element_type": t, "question": q, "choices": ["yes", "no"], "answer": "yes"} for e, t, q in items]
    return json.dumps({"qa": qa + list(extra)})


def main():
    lines = []
    for index, (name, entries) in enumerate(DATA.items()):
        cat = category(name)
        texts = [text for text, _ in entries]
        key = f"prompts/{cat.slug}/batch000"
        body = json.dumps({"descriptions": texts}, indent=1)
        if name == "Food & Beverages":  # a truncated answer, then the repair
            lines.append({"key": key, "content": body[: len(body) // 2], "finish_reason": "length"})
            lines.append({"key": key + "#repair1", "content": body})
        elif name == "Plants":  # JSON in a fenced code block, as chat models often answer
            lines.append({"key": key, "content": "Here are the descriptions:\n```json\n" + body + "\n```"})
        else:
            lines.append({"key": key, "content": body})
        for text, qa in entries:
            if qa is None:
                continue  # a duplicate: the prompt stage drops it, so no QA is asked for it
            key = f"qa/{prompt_id(cat, text)}"
            if text.startswith("A rooftop yoga class"):  # never 5 valid pairs: dropped
                bad = [{"element": "yoga", "element_type": "sport", "question": "Is this yoga?", "choices": ["yes", "no"], "answer": "yes"}]
                lines.append({"key": key, "content": qa_json(qa[:3], bad)})
                lines.append({"key": key + "#repair1", "content": qa_json(qa[:4])})
                lines.append({"key": key + "#repair2", "content": qa_json(qa[:4])})
            elif text.startswith("A light bulb"):  # a refusal, then the repair
                lines.append({"key": key, "content": "I'm sorry, but I can't help with that request."})
                lines.append({"key": key + "#repair1", "content": qa_json(qa)})
            elif text.startswith("A yellow tram"):  # wrong field name, then the repair
                lines.append({"key": key, "content": qa_json(qa).replace('"qa"', '"questions"')})
                lines.append({"key": key + "#repair1", "content": qa_json(qa)})
            elif text.startswith("A marble statue"):  # invalid records mixed in: dropped, prompt kept
                extra = [
                    {"element": "base", "element_type": "object", "question": "Is there a base?", "choices": ["yes", "no"], "answer": "maybe"},
                    {"element": "dancer", "element_type": "human", "question": "", "choices": ["yes", "no"], "answer": "yes"},
                ]
                lines.append({"key": key, "content": qa_json(qa, extra)})
            else:
                lines.append({"key": key, "content": qa_json(qa)})
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with OUT.open("w", encoding="utf-8") as handle:
        for line in lines:
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"wrote {len(lines)} recorded answers to {OUT}")


if __name__ == "__main__":
    main()
