"""Reading one question over a document of any length: its windows in, one answer with evidence out.

`plan_reading` turns a question and its passage into the model inputs of every window. The
engine answers the windows (any number of questions' windows share batches). `combine` picks
the document's answer: each window's answer is scored by its length-normalised log-probability;
windows that wrote the no-answer text abstain; the best-scored answer wins; the document has no
answer when every window abstains, or when the best score falls below the adapter's no-answer
threshold (calibrated by `loraqa eval`). HF's run_seq2seq_qa.py keeps only the last chunk's
prediction (transformers #17193); here every window competes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loraqa.config.templates import uses_context
from loraqa.data.features import encode_prompt
from loraqa.data.windows import PassageWindow, check_budget, passage_budget, split_passage, tokenise_passage
from loraqa.errors import EmptyDocument
from loraqa.inference.generation import Generated, generate_scored


@dataclass
class Answer:
    answer: str  # "" when there is no answer
    adapter: str
    score: float | None  # length-normalised log-probability of what was returned (answer or abstention)
    no_answer: bool
    start: int | None  # character offsets of the answer in the document, when it is quoted verbatim
    end: int | None
    windows: int  # how many windows of the document were read
    route_score: float | None = None  # similarity to the adapter's domain, when `auto` chose it
    prompt_tokens: int = 0  # model input tokens over all windows
    completion_tokens: int = 0  # tokens of the returned output
    stopped: bool = True  # the output ended by itself (false: it reached the token limit)

    EVIDENCE = ("answer", "adapter", "score", "no_answer", "start", "end", "windows", "route_score")

    def as_dict(self) -> dict:
        """The answer and its evidence, as every interface returns them."""
        return {k: getattr(self, k) for k in self.EVIDENCE}


@dataclass
class WindowInput:
    source: list[int]  # the model's input ids
    passage: list[int] | None  # passage token ids, for the extractive constraint
    window: PassageWindow | None  # where the window sits in the document (None: no passage)


@dataclass
class Reading:
    """One question's plan: the windows to answer and how to combine them."""
    adapter: str
    inputs: list[WindowInput]
    max_new_tokens: int
    no_answer_text: str | None
    threshold: float | None = None
    extractive: bool = False
    route_score: float | None = None
    results: list[Generated | None] = field(default_factory=list)

    def __post_init__(self):
        self.results = [None] * len(self.inputs)


def plan_reading(tokenizer, question: str, context: str | None, template: str, max_source: int, overlap: int,
                 extractive: bool = False, title: str = "") -> list[WindowInput]:
    """Model inputs for every window of the passage (one when it fits the window)."""
    row = {"question": question, "context": context or "", "title": title, "answers": {"text": []}}
    if not uses_context(template):
        return [WindowInput(encode_prompt(tokenizer, template, row, None, max_source), None, None)]
    if context is not None and not context.strip():
        raise EmptyDocument("the passage (context) is empty or only whitespace; send the text to read the answer from")
    budget = passage_budget(tokenizer, template, row, max_source)
    check_budget(budget, max_source)
    offsets = tokenise_passage(tokenizer, row["context"])
    inputs = []
    for w in split_passage(row["context"], offsets, budget, overlap):
        passage = tokenizer(w.text, add_special_tokens=False)["input_ids"] if extractive else None
        inputs.append(WindowInput(encode_prompt(tokenizer, template, row, w.text, max_source), passage, w))
    return inputs


def _abstains(text: str, no_answer_text: str | None) -> bool:
    return not text.strip() or (no_answer_text is not None and text.strip() == no_answer_text)


def combine(reading: Reading, apply_threshold: bool = True) -> Answer:
    """The document's answer from its windows' answers."""
    results = reading.results
    meta = {"route_score": reading.route_score, "prompt_tokens": sum(len(x.source) for x in reading.inputs)}
    answered = [(g, inp) for g, inp in zip(results, reading.inputs) if not _abstains(g.text, reading.no_answer_text)]
    if not answered:
        best_abstention = max(results, key=lambda g: g.score)
        return Answer("", reading.adapter, best_abstention.score, True, None, None, len(results),
                      completion_tokens=best_abstention.tokens, stopped=best_abstention.stopped, **meta)
    best, inp = max(answered, key=lambda pair: pair[0].score)
    if apply_threshold and reading.threshold is not None and best.score < reading.threshold:
        return Answer("", reading.adapter, best.score, True, None, None, len(results),
                      completion_tokens=best.tokens, stopped=best.stopped, **meta)
    start = end = None
    if inp.window is not None:
        at = inp.window.text.find(best.text)
        if at >= 0:
            start = inp.window.start + at
            end = start + len(best.text)
    return Answer(best.text, reading.adapter, best.score, False, start, end, len(results),
                  completion_tokens=best.tokens, stopped=best.stopped, **meta)


def read_rows(model, tokenizer, rows: list[dict], data_cfg, eval_cfg, autocast_bf16: bool = False) -> list[Answer]:
    """Answers of a model being trained (no adapter switching), read exactly as the Answerer
    reads them: every window, length-sorted batches, the same combination."""
    was_training = model.training
    model.eval()
    try:
        readings = []
        for row in rows:
            inputs = plan_reading(tokenizer, row["question"], row.get("context"), data_cfg.template,
                                  data_cfg.max_source_length, data_cfg.window_overlap, eval_cfg.extractive,
                                  row.get("title") or "")
            readings.append(Reading("adapter", inputs, eval_cfg.max_new_tokens, data_cfg.unanswerable_text,
                                    extractive=eval_cfg.extractive))
        jobs = sorted(((r, i) for r in readings for i in range(len(r.inputs))),
                      key=lambda job: len(job[0].inputs[job[1]].source), reverse=True)
        no_answer = tokenizer(data_cfg.unanswerable_text, add_special_tokens=False)["input_ids"]
        for start in range(0, len(jobs), eval_cfg.batch_size):
            batch = jobs[start:start + eval_cfg.batch_size]
            inputs = [r.inputs[i] for r, i in batch]
            results = generate_scored(model, tokenizer, [x.source for x in inputs], eval_cfg.max_new_tokens,
                                      eval_cfg.num_beams, passages=[x.passage for x in inputs],
                                      no_answer=[no_answer if eval_cfg.extractive else None] * len(batch),
                                      autocast_bf16=autocast_bf16)
            for (r, i), g in zip(batch, results):
                r.results[i] = g
        return [combine(r, apply_threshold=False) for r in readings]
    finally:
        model.train(was_training)
