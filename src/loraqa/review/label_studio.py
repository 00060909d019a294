"""Label Studio's formats for question answering: the labelling config, tasks with pre-filled
answers (predictions), and reading the annotations of a JSON export back.

The config extends Label Studio's own "Question Answering" template (the `text` and `question`
objects, the `answer` span labels with the single label "Answer") with a verdict and a field for
a corrected question, so a reviewer can also reject a pair or say the passage has no answer.
Results follow Label Studio's JSON format: a span is {"type": "labels", "from_name": "answer",
"to_name": "text", "value": {"start", "end", "text", "labels": ["Answer"]}}, a verdict
{"type": "choices", "value": {"choices": [...]}}, the corrected question {"type": "textarea",
"value": {"text": [...]}}. Written by hand: Label Studio's SDK brings a web client, OpenCV and
NLTK along, for a format that is a few dicts.
"""

from __future__ import annotations

from dataclasses import dataclass, field

TEXT, QUESTION, ANSWER, VERDICT, QUESTION_FIX = "text", "question", "answer", "verdict", "question_fix"
ANSWER_LABEL = "Answer"
KEEP, REJECT, NO_ANSWER = "Keep", "Reject", "No answer in passage"

# pre-wrap: Label Studio trims runs of spaces on display otherwise, while offsets count every
# character of the text (its Text tag documentation).
LABEL_CONFIG = f"""<View>
  <Style>.htx-text {{ white-space: pre-wrap; }}</Style>
  <Header value="Please read the passage"/>
  <Text name="{TEXT}" value="${TEXT}" granularity="word"/>
  <Header value="Select a text span answering the following question:"/>
  <Text name="{QUESTION}" value="${QUESTION}"/>
  <Labels name="{ANSWER}" toName="{TEXT}">
    <Label value="{ANSWER_LABEL}" maxUsage="1" background="red"/>
  </Labels>
  <Header value="Is this a good question-answer pair?"/>
  <Choices name="{VERDICT}" toName="{TEXT}" choice="single-radio" showInline="true">
    <Choice value="{KEEP}"/>
    <Choice value="{REJECT}"/>
    <Choice value="{NO_ANSWER}"/>
  </Choices>
  <Header value="A better question (leave empty to keep it):"/>
  <TextArea name="{QUESTION_FIX}" toName="{TEXT}" maxSubmissions="1" rows="2"/>
</View>
"""


def span_result(start: int, end: int, text: str, rid: str = "answer-0") -> dict:
    return {
        "id": rid,
        "from_name": ANSWER,
        "to_name": TEXT,
        "type": "labels",
        "value": {"start": start, "end": end, "text": text, "labels": [ANSWER_LABEL]},
    }


def task(
    passage: str,
    question: str,
    provenance: dict,
    answer: tuple[int, int] | None,
    model_version: str,
    score: float | None,
) -> dict:
    """One task: the passage and question as data (with loraqa's provenance beside them), the
    current answer as a prediction that Label Studio pre-fills for the reviewer."""
    result = [] if answer is None else [span_result(answer[0], answer[1], passage[answer[0] : answer[1]])]
    prediction: dict[str, object] = {"model_version": model_version, "result": result}
    if score is not None:
        prediction["score"] = round(float(score), 4)  # Label Studio sorts tasks by it
    return {"data": {TEXT: passage, QUESTION: question, "loraqa": provenance}, "predictions": [prediction]}


@dataclass
class Review:
    """What a reviewer decided for one task (the latest annotation that was not skipped)."""

    spans: list[tuple[int | None, str]] = field(default_factory=list)  # (start as labelled, text)
    verdict: str | None = None
    question: str | None = None  # a rewritten question
    reviewer: object = None


class BadTask(ValueError):
    """A task whose annotations are not in Label Studio's JSON format (the message says where)."""


MAX_ANSWER_CHARS = 1_000  # a longer "answer" is not a span a reader learns to quote


def _strings(value, what: str) -> list[str]:
    """A list of strings (or one string), or BadTask."""
    if isinstance(value, str):
        return [value]
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise BadTask(f"its {what} is not text")
    return value


def latest_review(exported_task: dict, passage: str | None = None) -> Review | str | None:
    """The task's review; "skipped" when every annotation was cancelled; None when it has none.
    Every field read is checked (BadTask names the first that is wrong): a span's start must be
    an offset in the passage (a whole number, not a boolean, 0 to its length), an answer at most
    MAX_ANSWER_CHARS characters."""
    annotations = exported_task.get("annotations")
    if annotations is None:
        annotations = []
    if not isinstance(annotations, list) or not all(isinstance(a, dict) for a in annotations):
        raise BadTask("its 'annotations' is not a list of annotations")
    done = [a for a in annotations if not a.get("was_cancelled")]
    if not done:
        return "skipped" if annotations else None
    latest = max(
        enumerate(done), key=lambda ia: (str(ia[1].get("updated_at") or ia[1].get("created_at") or ""), ia[0])
    )[1]
    completed_by = latest.get("completed_by")
    review = Review(
        reviewer=completed_by if isinstance(completed_by, (int, str)) and not isinstance(completed_by, bool) else None
    )
    results = latest.get("result")
    if results is None:
        results = []
    if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
        raise BadTask("its annotation's 'result' is not a list of results")
    for item in results:
        value, name = item.get("value"), item.get("from_name")
        if value is None:
            continue
        if not isinstance(value, dict):
            raise BadTask(f"the value of its '{name}' result is not an object")
        if name == ANSWER and item.get("type") == "labels":
            text = value.get("text")
            if text is None:
                continue
            if not isinstance(text, str):
                raise BadTask("its answer span's text is not text")
            if len(text) > MAX_ANSWER_CHARS:
                raise BadTask(f"its answer is longer than {MAX_ANSWER_CHARS:,} characters")
            start = value.get("start")
            if start is not None and (
                isinstance(start, bool)
                or not isinstance(start, int)
                or start < 0
                or (passage is not None and start > len(passage))
            ):
                raise BadTask(f"its answer's start ({str(start)[:20]}) is not an offset in the passage")
            if text.strip():
                review.spans.append((start, text))
        elif name == VERDICT and value.get("choices") is not None:
            choices = _strings(value["choices"], "verdict")
            review.verdict = choices[0] if choices else None
        elif name == QUESTION_FIX and value.get("text") is not None:
            fixed = _strings(value["text"], "rewritten question")
            if fixed and fixed[0].strip():
                review.question = fixed[0].strip()
    review.spans.sort(key=lambda s: s[0] if s[0] is not None else -1)
    return review
