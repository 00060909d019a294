"""Tokenisation: answers stay inside the source window; padding never reaches the loss."""

from __future__ import annotations

import itertools

from loraqa.config import load_config
from loraqa.data.features import FeatureCounts, build_features, encode_row


def long_row(squad_rows, position: str):
    """A passage far longer than the window, with the answer at its start, middle or end."""
    filler = " ".join(r["context"] for r in squad_rows[3:15])
    answer = "Guido van Rossum"
    parts = {
        "start": f"{answer} wrote it. {filler}",
        "middle": f"{filler} {answer} wrote it. {filler}",
        "end": f"{filler} It was {answer}.",
    }
    context = parts[position]
    return {
        "id": position,
        "title": "",
        "question": "Who created Python?",
        "context": context,
        "answers": {"text": [answer], "answer_start": [context.find(answer)]},
    }


def test_training_window_keeps_the_answer_wherever_it_is(tokenizer, squad_rows):
    cfg = load_config("default", sets=["data.max_source_length=64", "data.doc_stride=16"])
    for position in ("start", "middle", "end"):
        counts = FeatureCounts()
        f = encode_row(tokenizer, long_row(squad_rows, position), cfg.data, True, counts)
        source = tokenizer.decode(f["input_ids"], skip_special_tokens=True)
        assert len(f["input_ids"]) <= 64
        assert "Guido van Rossum" in source, position
        assert source.rstrip().endswith("Who created Python?")  # the question is never cut
        assert counts.context_truncated == 1
    assert cfg.data.max_source_length == 64


def test_reading_windows_cover_the_whole_passage_and_keep_the_question(tokenizer, squad_rows):
    """Answering reads every window: together they hold all of the passage (none skipped), each
    overlaps the next, and the question is whole in each."""
    from loraqa.inference.reading import WindowShape, plan_reading

    row = long_row(squad_rows, "end")
    inputs = plan_reading(tokenizer, row["question"], row["context"], WindowShape("squad", 64, 16))
    assert len(inputs) > 3
    spans = [(x.window.start, x.window.end) for x in inputs]
    assert spans[0][0] == 0 and spans[-1][1] == len(row["context"].rstrip())
    for (_s1, e1), (s2, e2) in itertools.pairwise(spans):
        assert s2 < e1 <= e2  # overlapping, advancing, nothing between them skipped
    for x in inputs:
        source = tokenizer.decode(x.source, skip_special_tokens=True)
        assert len(x.source) <= 64 and source.rstrip().endswith("Who created Python?")
    assert "It was Guido" in tokenizer.decode(inputs[-1].source, skip_special_tokens=True)


def test_answer_longer_than_the_window_is_dropped_and_counted(tokenizer, squad_rows):
    row = long_row(squad_rows, "middle")
    row["answers"] = {"text": [row["context"][:400]], "answer_start": [0]}
    counts = FeatureCounts()
    cfg = load_config("default", sets=["data.max_source_length=64", "data.doc_stride=16"])
    assert encode_row(tokenizer, row, cfg.data, True, counts) is None
    assert counts.dropped_answer_outside_window == 1


def test_targets_end_with_eos_and_long_targets_are_counted(tokenizer, squad_rows):
    counts = FeatureCounts()
    cfg = load_config("default", sets=["data.max_source_length=256", "data.max_target_length=3"])
    f = encode_row(tokenizer, squad_rows[0], cfg.data, True, counts)
    assert f["labels"][-1] == tokenizer.eos_token_id
    cfg.data.max_target_length = 2
    g = encode_row(tokenizer, squad_rows[2], cfg.data, True, counts)
    assert len(g["labels"]) == 2 and counts.target_truncated >= 1


def test_collated_labels_are_masked_with_minus_100(tokenizer, squad_rows, tiny_model_dir):
    # The seed padded labels with the pad id, so padding counted in its loss.
    from transformers import AutoModelForSeq2SeqLM, DataCollatorForSeq2Seq

    cfg = load_config("default")
    ds, _ = build_features(tokenizer, squad_rows[:4], cfg.data, train=True)
    model = AutoModelForSeq2SeqLM.from_pretrained(tiny_model_dir)
    collate = DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100)
    feats = [{k: ds[i][k] for k in ("input_ids", "attention_mask", "labels")} for i in range(4)]
    batch = collate(feats)
    lengths = [len(f["labels"]) for f in feats]
    assert len(set(lengths)) > 1  # otherwise there is no padding to check
    for row, feat, n in zip(batch["labels"].tolist(), feats, lengths):
        assert row[:n] == feat["labels"]
        assert all(t == -100 for t in row[n:])
    # padding is dynamic: the batch is as long as its longest source, not a fixed maximum
    assert batch["input_ids"].shape[1] == max(len(f["input_ids"]) for f in feats)
