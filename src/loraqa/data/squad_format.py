"""The official SQuAD JSON layout (v1.1 and v2.0): {"version", "data": [articles]} -> flat rows.

Read by data loading (training and eval files) and by `loraqa score`, which must see the
questions exactly as the official evaluation scripts do.
"""

from __future__ import annotations


def is_official(data) -> bool:
    return isinstance(data, dict) and isinstance(data.get("data"), list)


def official_version(data: dict) -> str:
    """'v2' when the file says version 2 or any question carries is_impossible, else 'v1'."""
    if str(data.get("version", "")).lstrip("v").startswith("2"):
        return "v2"
    return "v2" if any("is_impossible" in qa for _, _, qa in _questions(data)) else "v1"


def official_rows(data: dict, impossible_means_no_answer: bool = True) -> list[dict]:
    """Flat rows in the hub's column layout: {id, title, context, question, answers{text, answer_start}}.

    The official scoring scripts read `answers` whatever `is_impossible` says; training data
    treats an impossible question as having no answer (impossible_means_no_answer)."""
    rows = []
    for title, context, qa in _questions(data):
        answers = [] if impossible_means_no_answer and qa.get("is_impossible") else qa.get("answers", [])
        rows.append(
            {
                "id": qa.get("id"),
                "title": title,
                "context": context,
                "question": qa.get("question", ""),
                "answers": {
                    "text": [a.get("text", "") for a in answers],
                    "answer_start": [a.get("answer_start", -1) for a in answers],
                },
            }
        )
    return rows


def _questions(data: dict):
    for article in data["data"]:
        title = article.get("title", "")
        for para in article.get("paragraphs", []):
            for qa in para.get("qas", []):
                yield title, para.get("context", ""), qa
