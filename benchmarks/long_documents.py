"""Long documents: windows vs cutting from the start, by where the fact sits; abstention; cost.

In the synthetic world of learning_check.py (facts about made-up people, here with one-word
names from a pool of 400, and "buyers" passages where two people buy the same kind of thing, so
only the name tells whose colour or market it was), a small T5 is pre-trained on short passages
of family A and buyers, a third of them unanswerable (it stands in for FLAN-T5, which already
reads SQuAD v2-style passages and says when a passage holds no answer), then LoRA-adapted with
`loraqa train` to documents of a few people's buyers passages, with windows that do not hold the
answer labelled "unanswerable"
(data.negative_windows). `loraqa eval` calibrates the no-answer threshold on a dev set. Then, on
documents of about 2k, 8k and 32k tokens made of many people's passages (passages never seen in
training: every fact is drawn afresh), with the asked person's passage at a random position:

- EM by the position of the fact (deciles), reading every window vs keeping the passage's start
  (what loraqa did before windows), against the EM of the same questions on the short passage;
- abstention when the person is not in the document at all;
- which data.negative_windows to train with (0, 1, 2 compared on the dev set);
- the cost: answers/s on 8k-token documents with the flan-t5-small architecture, all windows
  in batches vs one window at a time.

    .venv/bin/python benchmarks/long_documents.py            # about 40 minutes on 2 CPU cores
    .venv/bin/python benchmarks/long_documents.py --quick    # a few minutes: small sizes (CI)
    .venv/bin/python benchmarks/long_documents.py --base ~/models/flan-t5-small   # a real reader

Before the tables it prints a reader check: on short passages, how often the adapter gives the
asked person's fact, the other buyer's, or abstains, and whether it abstains when the asked
person is absent. The tables mean something only for a reader that tells the buyers apart.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import commands
import learning_check as world

WINDOW = ["data.max_source_length=192", "data.doc_stride=48"]


def one_word_names() -> list[str]:
    """The 400 two-syllable names of this world, sorted."""
    return sorted({(a + b).capitalize() for a in world.SYLLABLES for b in world.SYLLABLES})


def buyers(rng, name: str, other: str) -> tuple[str, list]:
    """Two people buy the same kind of thing: whose colour or market it was is told only by the
    name beside it. (In learning_check's family B only one person buys anything, so a reader can
    answer from the sentence pattern without ever checking the name, and then cannot tell that
    the asked person is absent from a window.)"""
    thing = rng.choice(world.THINGS)
    colors, places = rng.choice(world.COLORS, 2, replace=False), rng.choice(world.PLACES, 2, replace=False)
    mine = f"{name} bought a {colors[0]} {thing} at the market of {places[0]}."
    theirs = f"{other} bought a {colors[1]} {thing} at the market of {places[1]}."
    first, second = (mine, theirs) if rng.integers(2) else (theirs, mine)
    qas = [
        (f"What colour is the {thing} of {name}?", colors[0]),
        (f"Where did {name} buy the {thing}?", places[0]),
        (f"What did {name} buy?", f"a {colors[0]} {thing}"),
    ]
    return f"Last spring {first} {second}", qas


def passage(rng, name: str, others: list[str]) -> tuple[str, list]:
    other = others[int(rng.integers(len(others)))]
    return buyers(rng, name, other)


def document(rng, tokenizer, target: dict | None, pool: list[str], tokens: int) -> tuple[str, int | None]:
    """Passages of people from `pool` until about `tokens` tokens, with the target row's passage
    (if any) at a random slot. Returns the text and the target passage's character offset."""
    parts, size = [], 0
    while size < tokens:
        name = pool[int(rng.integers(len(pool)))]
        text, _ = passage(rng, name, pool)
        parts.append(text)
        size += len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
    if target is None:
        return " ".join(parts), None
    slot = int(rng.integers(len(parts) + 1))
    parts.insert(slot, target["context"])
    before = " ".join(parts[:slot])
    return " ".join(parts), len(before) + (1 if slot else 0)


def test_set(rng, tokenizer, rows: list[dict], pool: list[str], tokens: int) -> tuple[list[dict], list[dict]]:
    """Answerable documents (with the fact's relative position) and absent-person documents."""
    answerable, absent = [], []
    for r in rows:
        names = [n for n in pool if n not in r["context"]]
        context, at = document(rng, tokenizer, r, names, tokens)
        start = at + r["answers"]["answer_start"][0]
        answerable.append(
            dict(
                r,
                context=context,
                position=at / len(context),
                answers={"text": r["answers"]["text"], "answer_start": [start]},
            )
        )
    for r in rows[: len(rows) // 2]:
        names = [n for n in pool if n not in r["context"]]
        context, _ = document(rng, tokenizer, None, names, tokens)
        absent.append(dict(r, id=r["id"] + "-absent", context=context, answers={"text": [], "answer_start": []}))
    return answerable, absent


def absent_rows(rows: list[dict], pool: list[dict], names: set[str], rng, share: float) -> list[dict]:
    """SQuAD v2-style unanswerable questions: a row's question over another person's passage,
    for a random `share` of the rows (of every family in them, not only the first listed)."""
    out = []
    for i in sorted(rng.choice(len(rows), size=int(len(rows) * share), replace=False)):
        r = rows[i]
        person = next(w for w in r["question"].rstrip("?").split() if w in names)
        while True:
            other = pool[int(rng.integers(len(pool)))]
            if person not in other["context"]:
                break
        out.append(dict(r, id=r["id"] + "-absent", context=other["context"], answers={"text": [], "answer_start": []}))
    return out


def other_buyers_fact(row: dict) -> str | None:
    """The answer to the row's question about the other buyer in its passage (their colour,
    market, or "a <colour> <thing>"), or None when the passage is not a buyers passage."""
    bought = re.findall(r"(\w+) bought a (\w+) \w+ at the market of (\w+)\.", row["context"])
    asked = next((b for b in bought if b[0] in row["question"].rstrip("?").split()), None)
    others = [b for b in bought if b is not asked]
    if asked is None or len(others) != 1:
        return None
    swap = {asked[1]: others[0][1], asked[2]: others[0][2]}
    return " ".join(swap.get(w, w) for w in row["answers"]["text"][0].split())


def reader_check(answerer, rows: list[dict], absent: list[dict]) -> dict:
    """The adapter on short buyers passages, before any threshold: how often it gives the asked
    person's fact, the other buyer's, or abstains, and how often it abstains when the asked
    person is not in the passage. A reader that gives the other buyer's fact about as often as
    the asked person's cannot tell whether the asked person is in a window of a long document:
    it then answers wrongly from some window of every document, and the tables below measure
    that reader, not the windows."""
    keep, answerer.apply_threshold = answerer.apply_threshold, False
    try:
        mine, none = answer(answerer, rows), answer(answerer, absent)
    finally:
        answerer.apply_threshold = keep
    other = [not a.no_answer and a.answer == other_buyers_fact(r) for a, r in zip(mine, rows)]
    return {
        "questions": len(rows),
        "asked_persons_fact": 100 * sum(exact(mine, rows)) / len(rows),
        "other_buyers_fact": 100 * sum(other) / len(rows),
        "abstained_answerable": 100 * sum(a.no_answer for a in mine) / len(rows),
        "abstained_absent": 100 * sum(a.no_answer for a in none) / len(none),
    }


def answer(answerer, rows: list[dict], cut: bool = False, batch_size: int = 32):
    """The Answerer's answers; cut=True keeps only each document's first window (cutting the
    passage from its start at the window, as loraqa did before reading in windows)."""
    from loraqa.inference.reading import Reading

    readings = [answerer.plan({"question": r["question"], "context": r["context"]}) for r in rows]
    if cut:
        readings = [
            Reading(x.adapter, x.inputs[:1], x.max_new_tokens, x.no_answer_text, x.threshold, x.extractive)
            for x in readings
        ]
    return answerer.read(readings, batch_size=batch_size)


def exact(answers, rows) -> list[float]:
    from loraqa.evaluation.metrics import exact_match_v1

    return [
        exact_match_v1(a.answer, r["answers"]["text"][0]) if not a.no_answer else 0.0 for a, r in zip(answers, rows)
    ]


def by_decile(values: list[float], positions: list[float]) -> list[float | None]:
    cells = [[] for _ in range(10)]
    for v, p in zip(values, positions):
        cells[min(int(p * 10), 9)].append(v)
    return [100 * sum(c) / len(c) if c else None for c in cells]


def train_adapter(work: Path, base: Path, train_file: Path, negatives: int, steps: int) -> Path:
    run = work / f"run-neg{negatives}"
    if (run / "adapter" / "adapter_config.json").is_file():  # a rerun in the same --workdir keeps it
        return run
    world.loraqa(
        "train",
        "--preset",
        "default",
        "--model",
        str(base),
        "--data",
        str(train_file),
        "--output",
        str(run),
        "--overwrite",
        "--set",
        f"train.max_steps={steps}",
        "--set",
        "train.learning_rate=2e-3",
        "--set",
        "train.eval_steps=0",
        "--set",
        "track.report_to=none",
        "--set",
        "data.num_samples=null",
        "--set",
        "data.test_size=0.02",
        "--set",
        f"data.negative_windows={negatives}",
        *[x for s in WINDOW for x in ("--set", s)],
    )
    return run


def calibrate(work: Path, run: Path, dev: list[dict]) -> dict:
    dev_file = world.write_jsonl(work / "dev.jsonl", dev)
    out = work / f"eval-{run.name}"
    # fp32 like the comparisons below (and faster than bf16 for a model this small)
    world.loraqa("eval", str(run), "--data", str(dev_file), "--output", str(out), "--set", "model.dtype=fp32")
    return json.loads((out / "summary.json").read_text())


def cost(work: Path, tokens: int, questions: int) -> dict:
    """Answers/s on long documents with the flan-t5-small architecture (random weights, the real
    cost per token) and a LoRA adapter: every window in batches of 16 vs one window at a time."""
    from peft import LoraConfig, TaskType, get_peft_model
    from transformers import AutoModelForSeq2SeqLM

    from loraqa.config import dump_config, load_config
    from loraqa.diagnostics.bench import bench_data
    from loraqa.diagnostics.synthetic import build_t5
    from loraqa.inference.answerer import Answerer

    rows, tok = bench_data(64)
    base = work / "flan-t5-small-random"
    build_t5("flan-t5-small", dropout=0.0).save_pretrained(base)
    tok.save_pretrained(base)
    peft = get_peft_model(
        AutoModelForSeq2SeqLM.from_pretrained(base),
        LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=8, lora_alpha=16, target_modules=["q", "v"]),
    )
    adapter = work / "flan-t5-small-adapter"
    peft.save_pretrained(adapter)
    tok.save_pretrained(adapter)
    cfg = load_config("default", sets=["eval.max_new_tokens=16"], overrides={"model": {"name": str(base)}})
    (adapter / "loraqa_config.yaml").write_text(dump_config(cfg))
    answerer = Answerer({"a": str(adapter)}, dtype="fp32")
    parts, size = [], 0
    while size < tokens:  # SQuAD-length passages until the document has about `tokens` tokens
        text = rows[len(parts) % len(rows)]["context"]
        parts.append(text)
        size += len(tok(text, add_special_tokens=False)["input_ids"])
    doc = " ".join(parts)
    requests = [{"question": r["question"], "context": doc} for r in rows[:questions]]
    windows = sum(len(answerer.plan(q).inputs) for q in requests)
    out = {"questions": questions, "windows": windows, "document_tokens": len(tok(doc)["input_ids"])}
    for label, batch in (("batched", 16), ("one_window_at_a_time", 1)):
        start = time.perf_counter()
        answerer.answer(requests, batch_size=batch)
        out[label] = questions / (time.perf_counter() - start)
    out["speedup"] = out["batched"] / out["one_window_at_a_time"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description="Windows vs cutting from the start on long documents.")
    ap.add_argument("--quick", action="store_true", help="small sizes, a few minutes")
    ap.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument(
        "--base",
        help="adapt this local pre-trained model folder (a FLAN-T5 snapshot, say) instead of "
        "pre-training the small stand-in reader",
    )
    ap.add_argument("--negatives", default="0,1,2", help="data.negative_windows values to compare on the dev set")
    args = ap.parse_args()
    commands.IN_PROCESS = args.quick  # a smoke run: loraqa's commands in this process
    if args.base and not (Path(args.base) / "config.json").is_file():
        ap.error(f"--base {args.base}: no config.json there (a local model folder is needed)")
    os.environ.setdefault("WANDB_MODE", "offline")
    q = args.quick
    lengths = [600, 1200] if q else [2000, 8000, 32000]
    n_questions = 10 if q else 200
    negatives_tried = [1] if q else [int(n) for n in args.negatives.split(",")]
    pre_steps, lora_steps = (20, 30) if q else (1500, 800)  # --quick: a smoke run, not a reader

    rng = np.random.default_rng(0)
    # One-word names (two syllables): telling people apart is then a matter of one token, which a
    # 3-layer model learns; with learning_check's five-syllable names it never learned to notice
    # that the asked person is absent from a window. The facts of every passage are drawn afresh,
    # so test passages are new even where a name was seen in training.
    names = one_word_names()
    rng.shuffle(names)
    a_train = world.make_rows(world.family_a, names, rng, per_name=20)[: 1200 if q else 6000]
    b_pre = world.make_rows(buyers, names, rng, per_name=10)[: 600 if q else 3000]
    b_rows = world.make_rows(buyers, names, rng, per_name=5)[: 300 if q else 1200]
    b_test = world.make_rows(buyers, names[:n_questions], rng)
    b_dev = world.make_rows(buyers, names[-(20 if q else 100) :], rng)
    for prefix, rows in (("pre", b_pre), ("train", b_rows), ("test", b_test), ("dev", b_dev)):
        for r in rows:
            r["id"] = f"{prefix}-{r['id']}"

    from loraqa.config.templates import TEMPLATES
    from loraqa.diagnostics.synthetic import train_tokenizer
    from loraqa.inference.answerer import Answerer

    if args.base:  # a real pre-trained reader: its own tokenizer measures the documents
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(args.base)
    else:
        texts = [r["context"] + " " + r["question"] for r in a_train + b_pre + b_rows + b_test] + list(
            TEMPLATES.values()
        )
        tokenizer = train_tokenizer(texts + ["unanswerable"], vocab_size=1200)
    one_token = sum(len(tokenizer(" " + n, add_special_tokens=False)["input_ids"]) == 1 for n in names)
    print(f"{len(names)} names, {one_token} of them one token", flush=True)
    from loraqa.modeling.precision import cpu_precision_note

    print(
        f"precision: `loraqa train` and `loraqa eval` in {cpu_precision_note()}; the comparisons "
        "answer in fp32 (free of bf16 rounding)",
        flush=True,
    )
    work = Path(args.workdir or tempfile.mkdtemp(prefix="loraqa-long-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    base = Path(args.base) if args.base else work / "base-model"
    if not (base / "config.json").is_file():  # a rerun in the same --workdir keeps the pre-trained base
        # like FLAN-T5, whose training mixture holds SQuAD v2, the base has seen unanswerable
        # questions (a third of them here): it knows to say so when the person is not in the passage
        pre = a_train + b_pre
        base = world.pretrain(pre + absent_rows(pre, pre, set(names), rng, 1 / 3), tokenizer, work, pre_steps, seed=0)
    timings = {"pretrain_s": time.time() - t0}

    # adapter training: each question's passage among 1-5 other people's, so most are longer than the window
    train_docs = [dict(r, id=r["id"] + "-short") for r in b_rows]  # the passages alone, and inside documents
    train_docs += absent_rows(train_docs, train_docs, set(names), rng, 1 / 3)
    for r in b_rows:
        context, at = document(
            rng, tokenizer, r, [n for n in names if n not in r["context"]], int(rng.integers(50, 260))
        )
        train_docs.append(
            dict(
                r,
                context=context,
                answers={"text": r["answers"]["text"], "answer_start": [at + r["answers"]["answer_start"][0]]},
            )
        )
    train_file = world.write_jsonl(work / "b_train.jsonl", train_docs)
    dev_answerable, dev_absent = test_set(rng, tokenizer, b_dev, names, lengths[-2] if not q else 600)

    choice = {}
    t0 = time.time()
    for n in negatives_tried:
        run = train_adapter(work, base, train_file, n, lora_steps)
        summary = calibrate(work, run, dev_answerable + dev_absent)
        choice[n] = {
            "run": run,
            "dev_f1": summary["f1"],
            "dev_best_f1": summary["best_f1"],
            "dev_HasAns_exact": summary.get("HasAns_exact"),
            "dev_NoAns_exact": summary.get("NoAns_exact"),
        }
        print(
            f"negative_windows={n}: dev F1 {summary['f1']:.1f} (with the calibrated threshold {summary['best_f1']:.1f}), "
            f"answerable EM {summary.get('HasAns_exact', 0):.1f}, absent-person abstention {summary.get('NoAns_exact', 0):.1f}"
        )
    timings["lora_s"] = time.time() - t0
    best_n = max(choice, key=lambda n: choice[n]["dev_best_f1"])
    answerer = Answerer({"b": str(choice[best_n]["run"])}, dtype="fp32")

    check = reader_check(answerer, b_test, absent_rows(b_test, b_test, set(names), np.random.default_rng(1), 1.0))
    print(
        f"reader check ({check['questions']} short passages, no threshold): the asked person's fact "
        f"{check['asked_persons_fact']:.0f}%, the other buyer's {check['other_buyers_fact']:.0f}%, abstained "
        f"{check['abstained_answerable']:.0f}%; asked person absent: abstained {check['abstained_absent']:.0f}%",
        flush=True,
    )
    short = answer(answerer, b_test)
    short_em = 100 * sum(exact(short, b_test)) / len(b_test)
    results = {}
    for tokens in lengths:
        docs, absent = test_set(rng, tokenizer, b_test, names, tokens)
        t0 = time.time()
        windowed = answer(answerer, docs)
        seconds = time.time() - t0
        cut = answer(answerer, docs, cut=True)
        none = answer(answerer, absent)
        positions = [d["position"] for d in docs]
        results[tokens] = {
            "windows_per_question": sum(a.windows for a in windowed) / len(docs),
            "windows_em": 100 * sum(exact(windowed, docs)) / len(docs),
            "cut_em": 100 * sum(exact(cut, docs)) / len(docs),
            "windows_by_decile": by_decile(exact(windowed, docs), positions),
            "cut_by_decile": by_decile(exact(cut, docs), positions),
            "absent_abstained": 100 * sum(a.no_answer for a in none) / len(none),
            "offsets_right": 100
            * sum(
                a.start == d["answers"]["answer_start"][0]
                for a, d in zip(windowed, docs)
                if not a.no_answer and a.answer == d["answers"]["text"][0]
            )
            / max(1, sum(exact(windowed, docs))),
            "seconds": seconds,
        }
        print(
            f"{tokens} tokens: {results[tokens]['windows_per_question']:.0f} windows per question, "
            f"{len(docs) / seconds:.2f} answers/s",
            flush=True,
        )
    t0 = time.time()
    speed = cost(work, 1000 if q else 8000, 2 if q else 8)
    timings["cost_s"] = time.time() - t0

    print(
        f"\n{len(b_test)} questions about passages never seen in training; adapter trained with "
        f"data.negative_windows={best_n}; no-answer threshold {answerer.adapter('b').settings.threshold}; "
        f"short-passage EM {short_em:.1f}"
    )
    header = "tokens  mode      " + " ".join(f"{d * 10:>3d}%" for d in range(10)) + "    all"
    print(header)
    for tokens, r in results.items():
        for mode in ("windows", "cut"):
            cells = " ".join(f"{v:4.0f}" if v is not None else "   -" for v in r[f"{mode}_by_decile"])
            print(f"{tokens:6d}  {mode:8s}  {cells}  {r[f'{mode}_em']:5.1f}")
        print(
            f"{'':6s}  absent person: abstained {r['absent_abstained']:.1f}%; "
            f"{r['windows_per_question']:.0f} windows per question"
        )
    print(
        f"\ncost, {speed['document_tokens']}-token documents, flan-t5-small architecture: "
        f"{speed['batched']:.3f} answers/s batched vs {speed['one_window_at_a_time']:.3f} one window at a time "
        f"({speed['speedup']:.2f}x)"
    )
    targets = [
        (
            "short-passage EM (the adapter reads at all; a floor for the comparisons below)",
            short_em,
            20.0,
            short_em >= 20.0,
        )
    ]
    worst_gap = max(short_em - v for r in results.values() for v in r["windows_by_decile"] if v is not None)
    targets.append(
        (
            "windows EM within 5 points of short-passage EM at every decile (worst gap)",
            worst_gap,
            5.0,
            worst_gap <= 5.0 and short_em >= 20.0,
        )
    )
    # facts past the first window (about 140 of the 192 tokens hold passage): cutting cannot see them
    beyond = [
        v
        for tokens, r in results.items()
        for d, v in enumerate(r["cut_by_decile"])
        if v is not None and d >= math.ceil(10 * 140 / tokens)
    ]
    targets.append(
        (
            "cutting from the start: EM past the first window (max over deciles, %)",
            max(beyond) if beyond else 0.0,
            5.0,
            bool(beyond) and max(beyond) <= 5.0 and short_em >= 20.0,
        )
    )
    worst_abstain = min(r["absent_abstained"] for r in results.values())
    targets.append(
        (
            "abstention on absent people (worst length, %)",
            worst_abstain,
            80.0,
            worst_abstain >= 80.0 and short_em >= 20.0,
        )
    )
    targets.append(("batched vs one window at a time (x)", speed["speedup"], 2.0, speed["speedup"] >= 2.0))
    print()
    for label, value, goal, ok in targets:
        print(f"{label:78s} {value:7.2f}  goal {goal:5.1f}  {'met' if ok else 'NOT met'}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "short_em": short_em,
                    "negative_windows": {n: {k: v for k, v in c.items() if k != "run"} for n, c in choice.items()},
                    "chosen_negative_windows": best_n,
                    "reader_check": check,
                    "lengths": results,
                    "cost": speed,
                    "timings": timings,
                    "targets": [{"target": t, "measured": v, "goal": g, "met": ok} for t, v, g, ok in targets],
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
