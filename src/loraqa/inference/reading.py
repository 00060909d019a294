"""Reading one question over a document of any length: its windows in, one answer with evidence out.

`plan_reading` turns a question and its passage into the model inputs of every window. The
engine answers the windows (any number of questions' windows share batches). `choose_answer` picks
the document's answer: each window's answer is scored by its length-normalised log-probability;
windows that wrote the no-answer text abstain; the best-scored answer wins (for passages from a
collection, their search scores count too: `passage_prior`); the document has no answer when every
window abstains, or when the best answer's score falls below the adapter's no-answer threshold
(calibrated by `loraqa eval`). HF's run_seq2seq_qa.py keeps only the last chunk's
prediction (transformers #17193); here every window competes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from loraqa.config.templates import uses_context
from loraqa.data.features import encode_prompt
from loraqa.data.windows import PassageWindow, check_budget, passage_budget, split_passage, tokenise_passage
from loraqa.errors import EmptyDocument, TooMuchWork
from loraqa.inference.engines.base import Generated, GenerationBatch


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
    # read from a collection's passages: where the answer was read first, then the other passages
    # read; start/end are then offsets in the cited document (None: the question came with its passage)
    citations: list[dict] | None = None

    EVIDENCE = ("answer", "adapter", "score", "no_answer", "start", "end", "windows", "route_score")

    def as_dict(self) -> dict:
        """The answer and its evidence, as every interface returns them."""
        out = {k: getattr(self, k) for k in self.EVIDENCE}
        if self.citations is not None:
            out["citations"] = self.citations
        return out


@dataclass
class WindowInput:
    source: list[int]  # the model's input ids
    passage: list[int] | None  # passage token ids, for the extractive constraint
    window: PassageWindow | None  # where the window sits in the document (None: no passage)
    origin: int | None = None  # which of the reading's retrieved passages it reads


@dataclass
class Reading:
    """One question's plan: the windows to answer and how to choose among their answers."""

    adapter: str
    inputs: list[WindowInput]
    max_new_tokens: int
    no_answer_text: str | None
    threshold: float | None = None
    extractive: bool = False
    route_score: float | None = None
    results: list[Generated | None] = field(default_factory=list)
    hits: list | None = None  # the collection's passages it reads (retrieval.store.Hit), if retrieved
    passage_weight: float = 1.0  # how much the passages' search scores count when choosing the answer

    def __post_init__(self):
        self.results = [None] * len(self.inputs)


@dataclass(frozen=True)
class WindowShape:
    """How a passage is cut into model inputs: the prompt template, the tokens one input may hold,
    how many tokens neighbouring windows share, and whether the passage's own token ids are kept
    (extractive answering draws its answer from them)."""

    template: str
    max_source: int
    overlap: int
    extractive: bool = False


def plan_reading(
    tokenizer,
    question: str,
    context: str | None,
    shape: WindowShape,
    title: str = "",
    offsets_cache: dict | None = None,
    max_windows: int | None = None,
) -> list[WindowInput]:
    """Model inputs for every window of the passage (one when it fits the window).

    offsets_cache: passage -> its token offsets, shared by the questions of one request that read
    the same document (tokenised once). max_windows: refuse a passage needing more windows,
    before any window is encoded."""
    template, max_source, overlap, extractive = shape.template, shape.max_source, shape.overlap, shape.extractive
    passage_text = context or ""
    row: dict[str, Any] = {"question": question, "context": passage_text, "title": title, "answers": {"text": []}}
    if not uses_context(template):
        return [WindowInput(encode_prompt(tokenizer, template, row, None, max_source), None, None)]
    if context is not None and not context.strip():
        raise EmptyDocument("the passage (context) is empty or only whitespace; send the text to read the answer from")
    budget = passage_budget(tokenizer, template, row, max_source)
    check_budget(budget, max_source)
    if offsets_cache is not None and passage_text in offsets_cache:
        offsets = offsets_cache[passage_text]
    else:
        offsets = tokenise_passage(tokenizer, passage_text)
        if offsets_cache is not None:
            offsets_cache[passage_text] = offsets
    windows = split_passage(passage_text, offsets, budget, overlap)
    if max_windows is not None and len(windows) > max_windows:
        raise TooMuchWork(
            f"the document needs {len(windows)} windows; this server reads at most {max_windows} for one request"
        )
    inputs = []
    for w in windows:
        passage = tokenizer(w.text, add_special_tokens=False)["input_ids"] if extractive else None
        inputs.append(WindowInput(encode_prompt(tokenizer, template, row, w.text, max_source), passage, w))
    return inputs


def _abstains(text: str, no_answer_text: str | None) -> bool:
    return not text.strip() or (no_answer_text is not None and text.strip() == no_answer_text)


def choose_answer(reading: Reading, apply_threshold: bool = True) -> Answer:
    """The document's answer from its windows' answers."""
    results = cast(list[Generated], reading.results)  # every window has been answered by now
    cited: list | None = [] if reading.hits is not None else None
    meta: dict[str, Any] = {
        "route_score": reading.route_score,
        "prompt_tokens": sum(len(x.source) for x in reading.inputs),
    }
    if not results:  # a collection with no passage worth reading: nothing was read
        return Answer("", reading.adapter, None, True, None, None, 0, citations=cited, **meta)
    answered = [(g, inp) for g, inp in zip(results, reading.inputs) if not _abstains(g.text, reading.no_answer_text)]
    if not answered:
        best_abstention = max(results, key=lambda g: g.score)
        return Answer(
            "",
            reading.adapter,
            best_abstention.score,
            True,
            None,
            None,
            len(results),
            completion_tokens=best_abstention.tokens,
            stopped=best_abstention.stopped,
            citations=cited,
            **meta,
        )
    best, inp = max(answered, key=lambda pair: pair[0].score + passage_prior(reading, pair[1]))
    if apply_threshold and reading.threshold is not None and best.score < reading.threshold:
        return Answer(
            "",
            reading.adapter,
            best.score,
            True,
            None,
            None,
            len(results),
            completion_tokens=best.tokens,
            stopped=best.stopped,
            citations=cited,
            **meta,
        )
    start = end = None
    if inp.window is not None:
        at = inp.window.text.find(best.text)
        if at >= 0:
            start = inp.window.start + at
            end = start + len(best.text)
    if reading.hits is not None:
        assert inp.origin is not None  # a retrieved passage's windows know which passage they read
        start, end, cited = citations(reading.hits, inp.origin, start, end, best.text)
    return Answer(
        best.text,
        reading.adapter,
        best.score,
        False,
        start,
        end,
        len(results),
        completion_tokens=best.tokens,
        stopped=best.stopped,
        citations=cited,
        **meta,
    )


def passage_prior(reading: Reading, inp: WindowInput) -> float:
    """weight * log(the passage's search score / the best one's), 0 for a document's own windows.

    A small adapter is about as sure of an answer read in another person's passage as of the right
    one; the search knows better which passage is about the question. Treating the relative search
    score as the passage's prior (BERTserini's interpolation of retriever and reader scores, on
    a scale that means the same for BM25 and PostgreSQL's ts_rank_cd) took EM answering from a
    collection from 28% to 88% of EM from the gold passage in benchmarks/learning_check.py
    (retrieval.passage_weight 0 against 1, the same fp32 adapter and questions)."""
    if reading.hits is None or inp.origin is None or not reading.passage_weight:
        return 0.0
    top = max(h.score for h in reading.hits)
    if top <= 0:
        return 0.0
    # a ratio to the best hit means the same in every search mode (BM25, cosine, fused in [0, 1]);
    # floored, since a fused or cosine score can be 0 or below
    ratio = max(reading.hits[inp.origin].score / top, 1e-3)
    return reading.passage_weight * math.log(ratio)


def citations(hits: list, read_in: int, start: int | None, end: int | None, answer: str):
    """(start, end in the document, the citations): first the passage the answer was read in,
    with the answer's own offsets in its document when quoted verbatim, then the other passages."""

    def cite(hit, s, e, quote) -> dict:
        return {
            "collection": hit.collection,
            "document": hit.document,
            "title": hit.title,
            "source": hit.source,
            "page": hit.page,
            "start": s,
            "end": e,
            "passage_score": round(hit.score, 4),
            "quote": quote,
        }

    hit = hits[read_in]
    if start is not None:
        start, end = hit.start + start, hit.start + end
    first = cite(
        hit,
        start if start is not None else hit.start,
        end if end is not None else hit.end,
        answer if start is not None else hit.text,
    )
    return (
        start,
        end,
        [first] + [cite(h, h.start, h.end, h.snippet or h.text) for i, h in enumerate(hits) if i != read_in],
    )


# ---------------------------------------------------------------- the one loop over windows

Job = tuple[Reading, int]  # a reading and one of its windows


def window_jobs(readings: list[Reading]) -> list[Job]:
    """Every window of the readings, longest input first: a batch of similar lengths pads little."""
    jobs = [(reading, i) for reading in readings for i in range(len(reading.inputs))]
    jobs.sort(key=lambda job: len(job[0].inputs[job[1]].source), reverse=True)
    return jobs


def read_all(
    readings: list[Reading],
    run_batch: Callable[[list[Job]], None],
    batch_size: int,
    one_adapter_per_batch: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """Answer every window of the readings in length-sorted batches; run_batch fills a batch's
    results (the server's batcher calls the same run_batch with its own, fair, batches)."""
    jobs = window_jobs(readings)
    groups = (
        [jobs]
        if not one_adapter_per_batch
        else [[j for j in jobs if j[0].adapter == name] for name in dict.fromkeys(r.adapter for r in readings)]
    )
    done = 0
    for group in groups:
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            run_batch(batch)
            done += len(batch)
            if progress is not None:
                progress(done, len(jobs))


def generation_batch(batch: list[Job], tokenizer, num_beams: int = 1) -> GenerationBatch:
    """The model call of a batch of windows: each row with its adapter, its passage ids when its
    reading is extractive (and the no-answer text it may write instead)."""
    no_answer_ids: dict[str, list[int]] = {}
    for reading, _ in batch:
        text = reading.no_answer_text
        if reading.extractive and text is not None and text not in no_answer_ids:
            no_answer_ids[text] = tokenizer(text, add_special_tokens=False)["input_ids"]
    inputs = [reading.inputs[i] for reading, i in batch]
    return GenerationBatch(
        adapters=[reading.adapter for reading, _ in batch],
        sources=[x.source for x in inputs],
        max_new_tokens=max(reading.max_new_tokens for reading, _ in batch),
        num_beams=num_beams,
        passages=[x.passage for x in inputs],
        no_answer=[
            no_answer_ids[r.no_answer_text] if r.extractive and r.no_answer_text is not None else None for r, _ in batch
        ],
    )


def fill(batch: list[Job], results: list[Generated], tokenizer) -> None:
    """Store each window's answer, cut to its own reading's token limit (a batch generates for the
    largest limit in it)."""
    for (reading, i), result in zip(batch, results):
        reading.results[i] = result.truncated(reading.max_new_tokens, tokenizer)
