"""TIFA v1.0 (Hu et al. 2023): benchmark files and scoring (pure, no torch). Used by the
evaluation stage; the VQA answers come from agfsync.models.vqa (multiple-choice questions by
choice likelihood, yes/no by the yes/no logits: documented in place of TIFA's
free-form-answer-to-choice mapping).

Files (github Yushi-Hu/tifa): tifa_v1.0_text_inputs.json, records {"id", "caption"}, and
tifa_v1.0_question_answers.json, records {"id", "caption", "question", "choices",
"answer", "element_type", "element"} (~25k questions for 4,081 prompts).
Score per image = fraction of its questions answered correctly; TIFA score = mean over
prompts; also accuracy per element type (over questions).
"""

from __future__ import annotations

from collections import defaultdict

from agfsync.core.io import DataError, read_json

QA_KEYS = ("id", "caption", "question", "choices", "answer", "element_type")


def load_questions(path) -> list[dict]:
    """TIFA question file -> one record per prompt, {"id", "prompt", "qa": [...]}, in file order."""
    records = read_json(path)
    if not isinstance(records, list):
        raise DataError(f"{path}: expected a JSON list of question records, got {type(records).__name__}")
    prompts: dict[str, dict] = {}
    for number, record in enumerate(records):
        missing = [k for k in QA_KEYS if not isinstance(record, dict) or k not in record]
        if missing:
            raise DataError(f"{path}, record {number}: lacks {', '.join(missing)}")
        choices = record["choices"]
        if not isinstance(choices, list) or record["answer"] not in choices:
            raise DataError(f"{path}, record {number} (id {record['id']}): answer {record['answer']!r} is not "
                            f"among the choices {choices!r}")
        entry = prompts.setdefault(record["id"], {"id": record["id"], "prompt": record["caption"], "qa": []})
        entry["qa"].append({"question": record["question"], "choices": choices, "answer": record["answer"],
                            "element_type": record["element_type"], "element": record.get("element")})
    return list(prompts.values())


def score(results: dict[str, list[tuple[str, bool]]]) -> dict:
    """`results[prompt id]` = [(element_type, correct), ...] for that prompt's image."""
    if not results:
        raise ValueError("TIFA: no results to score")
    per_image = {pid: sum(ok for _, ok in rows) / len(rows) for pid, rows in results.items() if rows}
    by_type = defaultdict(list)
    for rows in results.values():
        for element_type, ok in rows:
            by_type[element_type].append(ok)
    return {
        "score": sum(per_image.values()) / len(per_image),
        "num_prompts": len(per_image),
        "num_questions": sum(len(rows) for rows in results.values()),
        "by_element_type": {t: {"accuracy": sum(v) / len(v), "num_questions": len(v)} for t, v in sorted(by_type.items())},
    }
