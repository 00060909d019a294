"""Generate answers on a PyTorch model: batched, length-sorted, in inference mode, with scores.

Each answer's score is its length-normalised log-probability (the mean log-probability of its
tokens, EOS included), read from generation itself: two small logits processors record, at each
step, the log-sum-exp of the model's raw logits and the value of the chosen logit, so the
score costs two (batch,) vectors per step and no second forward pass. With the extractive
constraint the score still uses the model's unconstrained distribution: a span the model
would not have chosen scores low instead of looking certain. Beam search reports the library's
`sequences_scores` (also length-normalised).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList

from loraqa.inference.engines.base import Generated, GenerationBatch
from loraqa.inference.reading import (
    Answer,
    Job,
    Reading,
    WindowInput,
    WindowShape,
    choose_answer,
    fill,
    generation_batch,
    plan_reading,
    read_all,
)


def prepare_for_inference(model, dtype: str):
    """Inference in bf16 casts the weights once: autocast would re-cast fp32 weights at every
    matmul of every decoding step (measured 1.3-1.6x slower on CPU). T5 is safe in bf16 (same
    exponent range as fp32); it is fp16 that overflows."""
    model.eval()
    if dtype == "bf16":
        model.to(torch.bfloat16)
    return model


class _LogSumExp(LogitsProcessor):
    """First in the list: the normaliser of the model's own (unconstrained) distribution."""

    def __init__(self):
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):
        self.steps.append(torch.logsumexp(scores, dim=-1))
        return scores


class _ChosenLogit(LogitsProcessor):
    """Last in the list: greedy decoding picks the largest remaining logit, whose raw value
    (constraints only push others to -inf) minus the log-sum-exp is the chosen token's log-prob."""

    def __init__(self):
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids, scores):
        self.steps.append(scores.max(dim=-1).values)
        return scores


class SpanConstraint(LogitsProcessor):
    """Decoding restricted to a contiguous span of each row's passage tokens, or its no-answer
    text, then EOS. Rows with no passage (None) are free. Written by hand: transformers' prefix
    constraint has to sit before the score recorders, which need the unconstrained logits."""

    def __init__(self, passages: list[list[int] | None], no_answer: list[list[int] | None], eos: int, num_beams: int):
        self.passages = [np.asarray(p) if p is not None else None for p in passages]
        self.no_answer, self.eos, self.beams = no_answer, eos, num_beams

    def allowed(self, row: int, prefix: list[int]) -> list[int]:
        passage, no_answer = self.passages[row], self.no_answer[row]
        assert passage is not None  # rows without a passage are never constrained (see __call__)
        t = len(prefix)
        allowed: set[int] = set()
        if t == 0:
            allowed.update(int(x) for x in passage)
        elif len(passage) > t:
            windows = np.lib.stride_tricks.sliding_window_view(passage, t + 1)
            matches = windows[(windows[:, :t] == prefix).all(axis=1)]
            allowed.update(int(x) for x in matches[:, t])
        if (
            t
            and len(passage) >= t
            and (np.lib.stride_tricks.sliding_window_view(passage, t) == prefix).all(axis=1).any()
        ):
            allowed.add(self.eos)
        if no_answer:
            if prefix == no_answer[:t] and t < len(no_answer):
                allowed.add(no_answer[t])
            elif prefix == no_answer:
                allowed.add(self.eos)
        return sorted(allowed) or [self.eos]

    def __call__(self, input_ids, scores):
        mask = torch.zeros_like(scores, dtype=torch.bool)
        for i, ids in enumerate(input_ids.tolist()):
            row = i // self.beams
            generated = ids[1:]  # after the decoder start token
            if self.passages[row] is None or self.eos in generated:
                mask[i] = True
                continue
            mask[i, self.allowed(row, generated)] = True
        return scores.masked_fill(~mask, float("-inf"))


def _lengths(sequences: torch.Tensor, eos: int) -> torch.Tensor:
    """Generated tokens per row, up to and including the first EOS."""
    generated = sequences[:, 1:]
    is_eos = generated == eos
    first_eos = torch.where(
        is_eos.any(dim=1),
        is_eos.int().argmax(dim=1),
        torch.full_like(is_eos[:, 0], generated.shape[1] - 1, dtype=torch.long),
    )
    return first_eos + 1


@torch.inference_mode()
def generate_scored(
    model, tokenizer, g: GenerationBatch, autocast_bf16: bool = False, **generate_kwargs
) -> list[Generated]:
    """One batch: answers with their scores, in the input order. The batch's `passages` turn on
    the extractive constraint for the rows that have one. autocast_bf16: a model being trained in
    bf16 (bf16 frozen weights, fp32 adapter). The batch's adapters are chosen by the caller."""
    sources, max_new_tokens, num_beams, passages, no_answer = (
        g.sources,
        g.max_new_tokens,
        g.num_beams,
        g.passages,
        g.no_answer,
    )
    device = next(model.parameters()).device
    batch = tokenizer.pad({"input_ids": sources}, return_tensors="pt").to(device)
    lse, chosen = _LogSumExp(), _ChosenLogit()
    processors: list[LogitsProcessor] = [lse]
    if passages is not None and any(p is not None for p in passages):
        processors.append(
            SpanConstraint(passages, no_answer or [None] * len(sources), tokenizer.eos_token_id, num_beams)
        )
    processors.append(chosen)
    # use_cache explicitly: training turns the model's KV cache off, and generating without it
    # recomputes every previous step
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
        out = model.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            num_beams=num_beams,
            do_sample=False,
            use_cache=True,
            logits_processor=LogitsProcessorList(processors),
            return_dict_in_generate=True,
            output_scores=num_beams > 1,
            **generate_kwargs,
        )
    sequences = out.sequences.cpu()
    lengths = _lengths(sequences, tokenizer.eos_token_id)
    texts = tokenizer.batch_decode(sequences, skip_special_tokens=True)
    ids = [row[1 : 1 + n].tolist() for row, n in zip(sequences, lengths.tolist())]
    stopped = [tokenizer.eos_token_id in row for row in ids]
    if num_beams > 1:
        scores = out.sequences_scores.float().cpu().tolist()
        return [Generated(t.strip(), s, len(i), i, None, e) for t, s, i, e in zip(texts, scores, ids, stopped)]
    steps = sequences.shape[1] - 1
    logprobs = (torch.stack(chosen.steps[:steps], dim=1) - torch.stack(lse.steps[:steps], dim=1)).float().cpu()
    per_token = [row[: len(i)].tolist() for row, i in zip(logprobs, ids)]
    return [
        Generated(t.strip(), sum(lp) / len(lp), len(i), i, lp, e) for t, lp, i, e in zip(texts, per_token, ids, stopped)
    ]


@torch.inference_mode()
def target_logprobs(model, tokenizer, features: list[dict], batch_size: int = 16) -> list[float]:
    """The mean log-probability per token (EOS included) the model gives each feature's `labels`
    after its `input_ids`: the score generate_scored gives the model's own greedy answer, for an
    answer it is handed instead (teacher forcing, one forward pass)."""
    device = next(model.parameters()).device
    out: list[float] = []
    for i in range(0, len(features), batch_size):
        chunk = features[i : i + batch_size]
        batch = tokenizer.pad({"input_ids": [f["input_ids"] for f in chunk]}, return_tensors="pt").to(device)
        labels = torch.full((len(chunk), max(len(f["labels"]) for f in chunk)), -100, dtype=torch.long)
        for j, f in enumerate(chunk):
            labels[j, : len(f["labels"])] = torch.tensor(f["labels"])
        labels = labels.to(device)
        logprobs = model(**batch, labels=labels).logits.float().log_softmax(-1)
        known = labels != -100
        chosen = logprobs.gather(-1, labels.clamp(min=0).unsqueeze(-1)).squeeze(-1) * known
        out += (chosen.sum(1) / known.sum(1)).cpu().tolist()
    return out


def run_on_model(model, tokenizer, num_beams: int = 1, autocast_bf16: bool = False, **generate_kwargs):
    """A run_batch (inference/reading.py) on a PyTorch model held in memory, such as the one
    being trained: no engine, no adapter switching."""

    def run(batch: list[Job]) -> None:
        g = generation_batch(batch, tokenizer, num_beams)
        fill(
            batch,
            generate_scored(model, tokenizer, g, autocast_bf16=autocast_bf16, **generate_kwargs),
            tokenizer,
        )

    return run


def read_rows(model, tokenizer, rows: list[dict], data_cfg, eval_cfg, autocast_bf16: bool = False) -> list[Answer]:
    """Answers of a model being trained, read exactly as the Answerer reads them: every window,
    length-sorted batches, the same combination."""
    was_training = model.training
    model.eval()
    try:
        readings = [
            Reading(
                "adapter",
                plan_reading(
                    tokenizer,
                    row["question"],
                    row.get("context"),
                    WindowShape(
                        data_cfg.template, data_cfg.max_source_length, data_cfg.window_overlap, eval_cfg.extractive
                    ),
                    row.get("title") or "",
                ),
                eval_cfg.max_new_tokens,
                data_cfg.unanswerable_text,
                extractive=eval_cfg.extractive,
            )
            for row in rows
        ]
        read_all(readings, run_on_model(model, tokenizer, eval_cfg.num_beams, autocast_bf16), eval_cfg.batch_size)
        return [choose_answer(r, apply_threshold=False) for r in readings]
    finally:
        model.train(was_training)


def generate_ids(
    model,
    tokenizer,
    sources: list[list[int]],
    max_new_tokens: int,
    batch_size: int,
    num_beams: int = 1,
    progress: Callable[[int], None] | None = None,
    **generate_kwargs,
) -> list[str]:
    """Answers (text only) to raw model inputs, in the input order, through the same loop: sorting
    keeps padding (and wasted compute) small; each batch is decoded on the host at once, so
    nothing piles up on the device."""
    readings = [Reading("", [WindowInput(source, None, None)], max_new_tokens, None) for source in sources]
    done = [0]

    def counted(done_windows: int, total: int) -> None:
        if progress is not None:
            progress(done_windows - done[0])
        done[0] = done_windows

    read_all(readings, run_on_model(model, tokenizer, num_beams, **generate_kwargs), batch_size, progress=counted)
    return [cast(Generated, r.results[0]).text for r in readings]  # read_all answered every window
