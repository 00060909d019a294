"""Learning check: does the whole pipeline really learn? (No pretrained weights needed.)

1. Build a synthetic reading-comprehension set: short passages state facts about two made-up
   people; questions ask for one fact. Family A and family B use different facts and wording.
   Test questions are about people (names) never seen in training.
2. Pre-train a small T5 from scratch on family A (full fine-tuning): this stands in for FLAN-T5.
3. Adapt it to family B with `loraqa train` (LoRA only, base frozen).
4. `loraqa eval --baseline` on held-out family-B questions: the base model vs the adapter.

    .venv/bin/python benchmarks/learning_check.py            # about 5-10 minutes on 2 CPU cores
    .venv/bin/python benchmarks/learning_check.py --quick    # a smaller, faster version (CI)
    .venv/bin/python benchmarks/learning_check.py --ctranslate2   # also: the adapter exported to
        CTranslate2 (float32 and int8) vs the PyTorch engine in fp32, EM and same-answer share
    .venv/bin/python benchmarks/learning_check.py --retrieve     # also: the held-out questions asked
        without their passage, from a collection of their passages among thousands of people's
        (EM from the collection against EM from the gold passage; both engines with --ctranslate2)
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np

import commands
from commands import loraqa

SYLLABLES = "ka lo mi re su ta vi no pe da ri zu mo sa ne to li ga bo fe".split()
PLACES = "Arvel Brisk Corran Dunmoor Elst Farrow Glent Hollin Istra Jorvik Kelm Lusk Marrow Norvale Osk Pell".split()
JOBS = "baker pilot tailor farmer painter sailor miner weaver potter cook".split()
COLORS = "red blue green yellow purple orange black white grey pink".split()
THINGS = "bicycle lamp boat kettle violin clock coat wagon".split()
YEARS = [str(y) for y in range(1901, 1999)]


def make_name(rng) -> str:
    return "".join(rng.choice(SYLLABLES, 2)).capitalize() + " " + "".join(rng.choice(SYLLABLES, 3)).capitalize()


def family_a(rng, name, other):
    city, job, year = rng.choice(PLACES), rng.choice(JOBS), rng.choice(YEARS)
    o_city, o_job = rng.choice(PLACES), rng.choice(JOBS)
    context = (
        f"{name} was born in {city} in {year}. {other} grew up in {o_city}. "
        f"{name} works as a {job}, while {other} is a {o_job}."
    )
    qas = [
        (f"Where was {name} born?", city),
        (f"In which year was {name} born?", year),
        (f"What does {name} work as?", job),
    ]
    return context, qas


def family_b(rng, name, other):
    thing, color, place = rng.choice(THINGS), rng.choice(COLORS), rng.choice(PLACES)
    o_color = rng.choice(COLORS)
    context = (
        f"Last spring {name} bought a {color} {thing} at the market of {place}. {other} only owns a {o_color} {thing}."
    )
    qas = [
        (f"What colour is the {thing} of {name}?", color),
        (f"Where did {name} buy the {thing}?", place),
        (f"What did {name} buy?", f"a {color} {thing}"),
    ]
    return context, qas


def make_rows(family, names: list[str], rng, per_name: int = 1) -> list[dict]:
    rows = []
    for i, name in enumerate(names):
        for _ in range(per_name):
            other = names[(i + 1 + int(rng.integers(len(names) - 1))) % len(names)]
            context, qas = family(rng, name, other)
            q, a = qas[int(rng.integers(len(qas)))]
            rows.append(
                {
                    "id": f"{family.__name__}-{len(rows)}",
                    "title": "",
                    "context": context,
                    "question": q,
                    "answers": {"text": [a], "answer_start": [context.find(a)]},
                }
            )
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def pretrain(rows: list[dict], tokenizer, out: Path, steps: int, seed: int) -> Path:
    """Full fine-tuning of a randomly initialised small T5 on family A: the stand-in base model."""
    import torch
    from transformers import (
        DataCollatorForSeq2Seq,
        Seq2SeqTrainer,
        Seq2SeqTrainingArguments,
        T5Config,
        T5ForConditionalGeneration,
    )

    from loraqa.config import load_config
    from loraqa.data.features import build_features

    torch.manual_seed(seed)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=128,
        d_ff=256,
        num_layers=3,
        num_decoder_layers=3,
        num_heads=4,
        d_kv=32,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    model = T5ForConditionalGeneration(config)
    data_cfg = load_config("default", sets=["data.max_source_length=128"]).data
    train_ds, _ = build_features(tokenizer, rows, data_cfg, train=True)
    args = Seq2SeqTrainingArguments(
        output_dir=str(out / "pretrain-ckpt"),
        per_device_train_batch_size=32,
        learning_rate=2e-3,
        max_steps=steps,
        warmup_steps=0.05,
        lr_scheduler_type="linear",
        logging_steps=max(steps // 5, 1),
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        bf16=False,
        seed=seed,
        disable_tqdm=True,
    )
    trainer = Seq2SeqTrainer(
        model=model,
        args=args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        data_collator=DataCollatorForSeq2Seq(tokenizer, model=model, label_pad_token_id=-100),
    )
    trainer.train()
    base = out / "base-model"
    model.save_pretrained(base)
    tokenizer.save_pretrained(base)
    return base


def build_world(quick: bool) -> dict:
    """The seeded synthetic world: people, the training and test rows of both families, and a
    tokenizer trained on their text (the same for every script that builds it, so a base model
    pre-trained by one run fits the next: --base)."""
    rng = np.random.default_rng(0)
    names = sorted({make_name(rng) for _ in range(3000)})
    rng.shuffle(names)
    held_out, seen = names[:150], names[150:]
    n_a, n_b = (1200, 300) if quick else (6000, 600)
    a_train = make_rows(family_a, seen, rng, per_name=max(1, n_a // len(seen) + 1))[:n_a]
    b_train = make_rows(family_b, seen, rng)[:n_b]
    a_test = make_rows(family_a, held_out, rng)[:100]
    b_test = make_rows(family_b, held_out, rng)[:100]

    from loraqa.config.templates import TEMPLATES
    from loraqa.diagnostics.synthetic import train_tokenizer

    texts = [r["context"] + " " + r["question"] for r in a_train + b_train + a_test + b_test] + list(TEMPLATES.values())
    tokenizer = train_tokenizer(texts, vocab_size=400)
    return {
        "held_out": held_out,
        "seen": seen,
        "a_train": a_train,
        "b_train": b_train,
        "a_test": a_test,
        "b_test": b_test,
        "tokenizer": tokenizer,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="Pre-train on family A, LoRA-adapt to family B, compare EM/F1.")
    ap.add_argument("--quick", action="store_true", help="fewer examples and steps")
    ap.add_argument("--workdir", help="keep the files here (default: a temporary folder)")
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--ctranslate2", action="store_true", help="also compare CTranslate2 exports with PyTorch fp32")
    ap.add_argument("--base", help="reuse a base model pre-trained by an earlier run (its base-model folder)")
    ap.add_argument(
        "--retrieve",
        action="store_true",
        help="also answer the held-out family-B questions from a collection instead of their passages",
    )
    args = ap.parse_args()
    commands.IN_PROCESS = args.quick  # a smoke run: loraqa's commands in this process
    os.environ.setdefault("WANDB_MODE", "offline")
    world = build_world(args.quick)
    a_train, b_train, a_test, b_test = (world[k] for k in ("a_train", "b_train", "a_test", "b_test"))
    seen, tokenizer = world["seen"], world["tokenizer"]
    pre_steps, lora_steps = (300, 150) if args.quick else (1500, 400)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="loraqa-learning-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.base:  # the same synthetic world (seeded), so the earlier run's base and tokenizer fit it
        from transformers import AutoTokenizer

        base, tokenizer = Path(args.base), AutoTokenizer.from_pretrained(args.base)
    else:
        base = pretrain(a_train, tokenizer, work, pre_steps, seed=0)
    t_pre = time.time() - t0
    files = {
        k: write_jsonl(work / f"{k}.jsonl", v)
        for k, v in {"a_test": a_test, "b_train": b_train, "b_test": b_test}.items()
    }
    run = work / "run-b"
    t0 = time.time()
    loraqa(
        "train",
        "--preset",
        "default",
        "--model",
        str(base),
        "--data",
        str(files["b_train"]),
        "--output",
        str(run),
        "--overwrite",
        "--set",
        f"train.max_steps={lora_steps}",
        "--set",
        "train.learning_rate=2e-3",
        "--set",
        "train.eval_steps=0",
        "--set",
        "track.report_to=none",
        "--set",
        "data.num_samples=null",
        "--set",
        "data.test_size=0.05",
        "--set",
        "data.max_source_length=128",
    )
    t_lora = time.time() - t0
    loraqa("eval", str(run), "--data", str(files["b_test"]), "--baseline", "--output", str(work / "eval-b"))
    loraqa("eval", str(run), "--data", str(files["a_test"]), "--baseline", "--output", str(work / "eval-a"))
    b = json.loads((work / "eval-b" / "summary.json").read_text())
    a = json.loads((work / "eval-a" / "summary.json").read_text())
    rows = [("family A (pre-training task)", a["baseline"], a), ("family B (adapter's task)", b["baseline"], b)]
    print(f"\nheld-out questions about unseen people, 100 per family; pre-training {t_pre:.0f} s, LoRA {t_lora:.0f} s")
    print(f"{'questions':30s} {'base EM':>8s} {'base F1':>8s} {'+LoRA EM':>9s} {'+LoRA F1':>9s}")
    for label, before, after in rows:
        print(
            f"{label:30s} {before['exact_match']:8.1f} {before['f1']:8.1f} {after['exact_match']:9.1f} {after['f1']:9.1f}"
        )
    figures = {
        label: {
            "base": {k: before[k] for k in ("exact_match", "f1")},
            "lora": {k: after[k] for k in ("exact_match", "f1")},
        }
        for label, before, after in rows
    }
    if args.ctranslate2:
        figures["ctranslate2"] = engine_parity(run, files["b_test"], work)
    if args.retrieve:
        everyone = make_rows(family_b, seen, np.random.default_rng(1))  # one passage per seen person
        figures["retrieval"] = retrieval_check(run, files["b_test"], everyone + b_test, work, args.ctranslate2)
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


def retrieval_check(run: Path, data: Path, passages: list[dict], work: Path, ctranslate2: bool) -> dict:
    """The held-out questions asked without their passage, from a collection of every person's
    passage (theirs among thousands of others'), against the same questions with their passage."""
    corpus = work / "people.jsonl"
    corpus.write_text(
        "".join(
            json.dumps({"text": r["context"], "title": ""}) + "\n" for r in {r["context"]: r for r in passages}.values()
        )
    )
    store = work / "store"
    loraqa("collection", "add", "people", str(corpus), "--store", str(store))
    targets = [("pytorch", run, [])]
    if ctranslate2:  # the float32 export engine_parity wrote
        targets.append(("ctranslate2 float32", work / "export-float32", ["--engine", "ctranslate2"]))
    out = {}
    for label, target, engine in targets:
        folder = work / f"eval-retrieve-{label.split()[0]}"
        loraqa(
            "eval",
            str(target),
            "--data",
            str(data),
            "--retrieve",
            "--collection",
            "people",
            "--store",
            str(store),
            "--output",
            str(folder),
            *engine,
        )
        r = json.loads((folder / "summary.json").read_text())["retrieval"]
        out[label] = {k: r[k] for k in ("recall@1", "recall@5", "mrr", "exact_match", "given_exact_match")}
    passages_n = sum(1 for _ in corpus.open())
    print(f"\nwithout their passage: {passages_n} passages, one per person, in a collection")
    print(f"{'engine':22s} {'R@1':>6s} {'R@5':>6s} {'EM gold passage':>16s} {'EM collection':>14s} {'ratio':>7s}")
    for label, r in out.items():
        ratio = 100 * r["exact_match"] / r["given_exact_match"] if r["given_exact_match"] else float("nan")
        r["ratio"] = round(ratio, 1)
        print(
            f"{label:22s} {r['recall@1']:6.1f} {r['recall@5']:6.1f} {r['given_exact_match']:16.1f} "
            f"{r['exact_match']:14.1f} {ratio:6.1f}%  (goal >= 90%) {'met' if ratio >= 90 else 'NOT met'}"
        )
    return out


def engine_parity(run: Path, data: Path, work: Path) -> dict:
    """The adapter exported to CTranslate2 vs the PyTorch engine in fp32, on the same questions."""

    def predictions(folder: Path) -> dict:
        return {
            r["id"]: r["prediction"] for r in map(json.loads, (folder / "predictions.jsonl").read_text().splitlines())
        }

    loraqa("eval", str(run), "--data", str(data), "--set", "model.dtype=fp32", "--output", str(work / "eval-fp32"))
    reference = json.loads((work / "eval-fp32" / "summary.json").read_text())
    ref_preds = predictions(work / "eval-fp32")
    out = {
        "pytorch fp32": {
            "exact_match": reference["exact_match"],
            "same_answer": 100.0,
            "answers_per_s": reference["answers_per_second"],
        }
    }
    for q in ("float32", "int8"):
        loraqa("export", str(run), "--quantization", q, "--output", str(work / f"export-{q}"), "--overwrite")
        loraqa(
            "eval",
            str(work / f"export-{q}"),
            "--engine",
            "ctranslate2",
            "--data",
            str(data),
            "--output",
            str(work / f"eval-ct2-{q}"),
        )
        summary = json.loads((work / f"eval-ct2-{q}" / "summary.json").read_text())
        preds = predictions(work / f"eval-ct2-{q}")
        same = 100 * sum(preds[i] == p for i, p in ref_preds.items()) / len(ref_preds)
        out[f"ctranslate2 {q}"] = {
            "exact_match": summary["exact_match"],
            "same_answer": same,
            "answers_per_s": summary["answers_per_second"],
        }
    print(f"\n{'engine (family B, adapter)':28s} {'EM':>6s} {'same answer as fp32':>20s} {'answers/s':>10s}")
    for label, r in out.items():
        print(f"{label:28s} {r['exact_match']:6.1f} {r['same_answer']:19.1f}% {r['answers_per_s']:10.1f}")
    fp32_em = reference["exact_match"]
    for q, goal in (("float32", 1.0), ("int8", 2.0)):
        gap = abs(out[f"ctranslate2 {q}"]["exact_match"] - fp32_em)
        print(
            f"CTranslate2 {q} EM within {goal:.0f} point(s) of PyTorch fp32: {gap:.1f}  {'met' if gap <= goal else 'NOT met'}"
        )
    return out


if __name__ == "__main__":
    main()
