"""Writes data/demo/benchmarks/: miniature benchmark files in the official formats, for
the plumbing run on tiny random models (config/tiny.yaml) and the tests. Run it after changing this content:

    python tools/build_demo_benchmarks.py

  tifa/tifa_v1.0_text_inputs.json, tifa/tifa_v1.0_question_answers.json
      8 hand-written TIFA-style prompts (coco, partiprompt, paintskill, drawbench ids)
      with yes/no and multiple-choice questions over several element types;
  hpsv2/{anime,concept-art,paintings,photo}.json   3 prompts per style;
  mjhq/meta_data.json, mjhq/mjhq30k_imgs.zip       3 images in each of 3 categories:
      synthetic 96x96 JPEGs (seeded shapes), stored as <category>/<id>.jpg like the real zip;
  judge_responses.jsonl   recorded VLM-judge answers (provider: file), with a fenced
      answer, a wrong field repaired on the re-ask, and an answer that stays invalid (skipped).
The files are deterministic: rerunning the script rewrites identical bytes.
"""

import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

OUT = Path(__file__).resolve().parents[1] / "data" / "demo" / "benchmarks"

YN = ["yes", "no"]
TIFA = [
    ("coco_100001", "a brown dog sleeping on a red couch", [
        ("dog", "animal/human", "is there a dog?", YN, "yes"),
        ("brown", "color", "what color is the dog?", ["brown", "black", "white", "gray"], "brown"),
        ("couch", "object", "is there a couch?", YN, "yes"),
        ("red", "color", "is the couch red?", YN, "yes"),
        ("sleeping", "activity", "is the dog sleeping?", YN, "yes")]),
    ("coco_100002", "two people riding bicycles on a city street", [
        ("people", "animal/human", "are there people?", YN, "yes"),
        ("two", "counting", "how many people are there?", ["1", "2", "3", "4"], "2"),
        ("bicycles", "object", "are there bicycles?", YN, "yes"),
        ("riding", "activity", "are the people riding?", YN, "yes"),
        ("street", "location", "is this on a street?", YN, "yes")]),
    ("partiprompt_7", "a green teapot next to a stack of three books", [
        ("teapot", "object", "is there a teapot?", YN, "yes"),
        ("green", "color", "what color is the teapot?", ["green", "blue", "red", "yellow"], "green"),
        ("books", "object", "are there books?", YN, "yes"),
        ("three", "counting", "how many books are there?", ["1", "2", "3", "4"], "3"),
        ("next to", "spatial", "is the teapot next to the books?", YN, "yes")]),
    ("partiprompt_31", "an oil painting of a lighthouse in a storm", [
        ("oil painting", "other", "is this an oil painting?", YN, "yes"),
        ("lighthouse", "object", "is there a lighthouse?", YN, "yes"),
        ("storm", "attribute", "is there a storm?", YN, "yes"),
        ("painting", "other", "what kind of image is this?", ["painting", "photo", "drawing", "3d render"], "painting")]),
    ("paintskill_12", "a yellow cat to the left of a blue ball", [
        ("cat", "animal/human", "is there a cat?", YN, "yes"),
        ("yellow", "color", "is the cat yellow?", YN, "yes"),
        ("ball", "object", "is there a ball?", YN, "yes"),
        ("blue", "color", "what color is the ball?", ["blue", "red", "green", "white"], "blue"),
        ("left", "spatial", "is the cat to the left of the ball?", YN, "yes")]),
    ("paintskill_40", "four apples on a wooden table", [
        ("apples", "food", "are there apples?", YN, "yes"),
        ("four", "counting", "how many apples are there?", ["2", "3", "4", "5"], "4"),
        ("table", "object", "is there a table?", YN, "yes"),
        ("wooden", "material", "is the table wooden?", YN, "yes")]),
    ("drawbench_5", "a horse made of glass standing in a desert", [
        ("horse", "animal/human", "is there a horse?", YN, "yes"),
        ("glass", "material", "is the horse made of glass?", YN, "yes"),
        ("desert", "location", "is the horse in a desert?", YN, "yes"),
        ("standing", "activity", "is the horse standing?", YN, "yes")]),
    ("drawbench_18", "a small robot holding an umbrella in the rain", [
        ("robot", "object", "is there a robot?", YN, "yes"),
        ("small", "attribute", "is the robot small?", YN, "yes"),
        ("umbrella", "object", "is there an umbrella?", YN, "yes"),
        ("holding", "activity", "is the robot holding an umbrella?", YN, "yes"),
        ("rain", "attribute", "is it raining?", YN, "yes")]),
]

HPS = {
    "anime": ["A girl with silver hair reading under a cherry tree, anime style.",
              "A giant mecha standing in a flooded city at dawn.",
              "A cat cafe full of sleepy cats, cel shaded."],
    "concept-art": ["A floating castle above a sea of clouds, concept art.",
                    "An abandoned space station overgrown with plants.",
                    "A desert caravan of mechanical camels at dusk."],
    "paintings": ["A still life of lemons in a blue bowl, oil on canvas.",
                  "A stormy harbour with fishing boats, impressionist painting.",
                  "A portrait of an old sailor with a pipe, in the style of Rembrandt."],
    "photo": ["A red bicycle leaning against a brick wall.",
              "A bowl of ramen with a soft-boiled egg, top view.",
              "Morning fog over a pine forest, aerial photo."],
}

MJHQ = {
    "animals": ["a fox in the snow", "an owl on a branch at night", "a turtle swimming over coral"],
    "food": ["a stack of pancakes with berries", "a pizza with basil leaves", "sushi on a black plate"],
    "landscape": ["a waterfall in a green valley", "a lavender field at sunset", "red rocks under a starry sky"],
}

# (verdict text per model and prompt index) for the judge on the HPS prompts, 12 pairs per model.
VERDICTS = ["A", "B", "tie", "B", "A", "A", "B", "tie", "A", "B", "A", "B"]


def tifa_files() -> tuple[list, list]:
    inputs, questions = [], []
    for prompt_id, caption, qa in TIFA:
        inputs.append({"id": prompt_id, "caption": caption})
        for element, element_type, question, choices, answer in qa:
            questions.append({"id": prompt_id, "caption": caption, "question": question, "choices": choices,
                              "answer": answer, "element_type": element_type, "element": element})
    return inputs, questions


def mjhq_image(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 256, size=3)
    gradient = np.linspace(0, 1, 96)[None, :, None]
    array = (base[None, None, :] * (0.5 + 0.5 * gradient) + rng.normal(0, 12, size=(96, 96, 3))).clip(0, 255)
    image = Image.fromarray(array.astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(3):
        x, y = rng.integers(0, 70, size=2)
        size = int(rng.integers(10, 30))
        draw.ellipse([int(x), int(y), int(x) + size, int(y) + size], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def mjhq_files() -> tuple[dict, bytes]:
    meta, buffer = {}, io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        for c, (category, prompts) in enumerate(MJHQ.items()):
            for i, prompt in enumerate(prompts):
                image_id = f"{c:02d}{i:02d}a5f3c9e1d7b{c}{i}"
                meta[image_id] = {"category": category, "prompt": prompt}
                info = zipfile.ZipInfo(f"{category}/{image_id}.jpg", date_time=(2024, 1, 1, 0, 0, 0))
                archive.writestr(info, mjhq_image(100 * c + i))
    return meta, buffer.getvalue()


def judge_responses() -> list[dict]:
    lines = []
    for model in ("sd15", "sdxl"):
        index = 0
        for style, prompts in HPS.items():
            for i in range(len(prompts)):
                key = f"judge/{model}/{style}-{i:03d}"
                verdict = VERDICTS[index]
                content = json.dumps({"winner": verdict, "reason": "recorded demo verdict"})
                if index == 1:
                    content = f"```json\n{content}\n```"
                if index == 4:  # wrong field name, repaired on the re-ask
                    lines.append({"key": key, "content": json.dumps({"better": verdict})})
                    key = f"{key}#repair1"
                if index == 7:  # stays invalid: skipped with its reasons
                    lines.append({"key": key, "content": json.dumps({"winner": "C"})})
                    key = f"{key}#repair1"
                    content = "I cannot decide."
                lines.append({"key": key, "content": content})
                index += 1
    return lines


def main() -> None:
    inputs, questions = tifa_files()
    write = {
        "tifa/tifa_v1.0_text_inputs.json": json.dumps(inputs, indent=1) + "\n",
        "tifa/tifa_v1.0_question_answers.json": json.dumps(questions, indent=1) + "\n",
    }
    for style, prompts in HPS.items():
        write[f"hpsv2/{style}.json"] = json.dumps(prompts, indent=1) + "\n"
    meta, archive = mjhq_files()
    write["mjhq/meta_data.json"] = json.dumps(meta, indent=1) + "\n"
    write["judge_responses.jsonl"] = "".join(json.dumps(line) + "\n" for line in judge_responses())
    for name, text in write.items():
        path = OUT / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (OUT / "mjhq" / "mjhq30k_imgs.zip").write_bytes(archive)
    print(f"wrote {len(write) + 1} files under {OUT}")


if __name__ == "__main__":
    main()
