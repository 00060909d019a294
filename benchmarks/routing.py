"""Routing: does adapter `auto` pick the adapter of the question's domain?

Three domains in the synthetic world of learning_check.py, as SQuAD-format data split by
article: births and jobs (A), purchases (B), pets (C). A small T5 is pre-trained on short
passages of all three, then one LoRA adapter per domain is trained with `loraqa train`, which
writes each adapter's domain profile. On held-out questions (people never seen in training):

- routing accuracy with and without the passage, for the TF-IDF profile loraqa uses and for
  mean base-encoder embeddings (the alternative), with the trained base and a random-weight one;
- answer F1 when `auto` routes vs when each question is given its right adapter.

    .venv/bin/python benchmarks/routing.py            # about 25 minutes on 2 CPU cores
    .venv/bin/python benchmarks/routing.py --quick    # a minute or two: small sizes (CI)
    .venv/bin/python benchmarks/routing.py --base DIR # reuse a pre-trained base (its tokenizer too)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import commands
import learning_check as world

ANIMALS = "dog cat parrot rabbit horse goat tortoise".split()
PET_NAMES = "Pip Rusty Moss Juniper Biscuit Clover Pepper Sable".split()


def family_c(rng, name, other):
    animal, pet, age = rng.choice(ANIMALS), rng.choice(PET_NAMES), str(rng.integers(2, 16))
    context = (
        f"{name} keeps a {animal} called {pet}, now {age} years old. {other} would rather have a {rng.choice(ANIMALS)}."
    )
    qas = [
        (f"What is the name of the {animal} of {name}?", pet),
        (f"Which animal does {name} keep?", animal),
        (f"How old is the {animal} of {name}?", age),
    ]
    return context, qas


DOMAINS = {"people": world.family_a, "purchases": world.family_b, "pets": family_c}


def squad_articles(rows_by_domain: dict[str, list[dict]], per_article: int = 10) -> dict:
    """Official SQuAD layout: each domain's rows grouped into articles titled by domain."""
    data = []
    for domain, rows in rows_by_domain.items():
        for k in range(0, len(rows), per_article):
            data.append(
                {
                    "title": f"{domain}-{k // per_article}",
                    "paragraphs": [
                        {
                            "context": r["context"],
                            "qas": [
                                {
                                    "id": r["id"],
                                    "question": r["question"],
                                    "answers": [
                                        {
                                            "text": r["answers"]["text"][0],
                                            "answer_start": r["answers"]["answer_start"][0],
                                        }
                                    ],
                                }
                            ],
                        }
                        for r in rows[k : k + per_article]
                    ],
                }
            )
    return {"version": "1.1", "data": data}


def embedder(model, tokenizer):
    """Mean-pooled encoder states of a text: the embedding-profile alternative to TF-IDF."""
    import torch

    @torch.inference_mode()
    def embed(texts: list[str]) -> np.ndarray:
        out = []
        for i in range(0, len(texts), 32):
            batch = tokenizer(texts[i : i + 32], return_tensors="pt", padding=True, truncation=True, max_length=256)
            states = model.get_encoder()(**batch).last_hidden_state
            mask = batch["attention_mask"][..., None].float()
            vecs = (states * mask).sum(1) / mask.sum(1)
            out.append(torch.nn.functional.normalize(vecs.float(), dim=-1).numpy())
        return np.concatenate(out)

    return embed


def embedding_accuracy(embed, train: dict[str, list[dict]], test: list[tuple[str, dict]], with_passage: bool) -> float:
    names = list(train)
    centroids = np.stack([embed([f"{r['question']} {r['context']}" for r in train[n]]).mean(0) for n in names])
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    queries = embed([f"{r['question']} {r['context'] if with_passage else ''}" for _, r in test])
    picked = (queries @ centroids.T).argmax(1)
    return 100 * float(np.mean([names[p] == domain for p, (domain, _) in zip(picked, test)]))


def build_domains(quick: bool, workdir: str | None) -> dict:
    """The three-domain world: a base pre-trained on all three, one adapter per domain trained with
    `loraqa train` (what a --workdir already holds is reused: the base, and each trained adapter),
    and the held-out test cases [(domain, row)] of people never seen in training."""
    q = quick
    rng = np.random.default_rng(1)
    names = sorted({world.make_name(rng) for _ in range(3000)})
    rng.shuffle(names)
    held_out, seen = names[:300], names[300:]
    n_pre, n_train, n_test = (300, 150, 20) if q else (2500, 600, 100)
    pre = {d: world.make_rows(f, seen, rng)[:n_pre] for d, f in DOMAINS.items()}
    train = {d: world.make_rows(f, seen[::-1], rng)[:n_train] for d, f in DOMAINS.items()}
    test = {d: world.make_rows(f, held_out, rng)[:n_test] for d, f in DOMAINS.items()}
    for split, by in (("pre", pre), ("train", train), ("test", test)):
        for d, rows in by.items():
            for r in rows:
                r["id"] = f"{split}-{d}-{r['id']}"

    from loraqa.config.templates import TEMPLATES
    from loraqa.diagnostics.synthetic import train_tokenizer
    from loraqa.modeling.files import load_tokenizer

    work = Path(workdir or tempfile.mkdtemp(prefix="loraqa-routing-"))
    work.mkdir(parents=True, exist_ok=True)
    everything = [r for by in (pre, train, test) for rows in by.values() for r in rows]
    tokenizer = train_tokenizer(
        [r["context"] + " " + r["question"] for r in everything] + list(TEMPLATES.values()) + ["unanswerable"],
        vocab_size=500,
    )
    t0 = time.time()
    base = work / "base-model"
    if not (base / "config.json").is_file():
        base = world.pretrain([r for rows in pre.values() for r in rows], tokenizer, work, 20 if q else 1500, seed=0)
    tokenizer = load_tokenizer(str(base))
    runs = {}
    for d, rows in train.items():
        path = work / f"{d}.json"
        path.write_text(json.dumps(squad_articles({d: rows})))
        runs[d] = work / f"run-{d}"
        if (runs[d] / "adapter" / "adapter_config.json").is_file():
            continue
        world.loraqa(
            "train",
            "--preset",
            "default",
            "--model",
            str(base),
            "--data",
            str(path),
            "--output",
            str(runs[d]),
            "--overwrite",
            "--set",
            f"train.max_steps={24 if q else 400}",
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
    return {
        "work": work,
        "base": base,
        "tokenizer": tokenizer,
        "runs": runs,
        "train": train,
        "cases": [(d, r) for d, rows in test.items() for r in rows],
        "seconds": time.time() - t0,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description="Routing accuracy and routed vs oracle F1 over three domains.")
    ap.add_argument("--quick", action="store_true", help="small sizes")
    ap.add_argument(
        "--workdir", help="keep the files here (default: a temporary folder); a base and adapters it holds are reused"
    )
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    commands.IN_PROCESS = args.quick  # a smoke run: loraqa's commands in this process
    os.environ.setdefault("WANDB_MODE", "offline")
    from loraqa.modeling.precision import cpu_precision_note

    print(
        f"precision: `loraqa train` and `loraqa eval` in {cpu_precision_note()}; the comparisons "
        "answer in fp32 (free of bf16 rounding)",
        flush=True,
    )
    w = build_domains(args.quick, args.workdir)
    runs, train, cases, tokenizer, base, seconds = (
        w["runs"],
        w["train"],
        w["cases"],
        w["tokenizer"],
        w["base"],
        w["seconds"],
    )
    from loraqa.diagnostics.synthetic import build_t5
    from loraqa.domain_profile import DomainProfile
    from loraqa.inference.answerer import Answerer
    from loraqa.inference.routing import tfidf_route as route  # the TF-IDF profiles, whatever `auto` defaults to

    figures = {"questions": len(cases), "domains": list(DOMAINS), "train_and_pretrain_s": seconds}
    profiles = {d: DomainProfile.read(run / "adapter") for d, run in runs.items()}
    for with_passage in (True, False):
        key = "with_passage" if with_passage else "question_only"
        picked = [route(profiles, r["question"], r["context"] if with_passage else None)[0] for _, r in cases]
        figures[f"tfidf_{key}"] = 100 * float(np.mean([p == d for p, (d, _) in zip(picked, cases)]))
    from transformers import AutoModelForSeq2SeqLM

    models = {
        "trained base": AutoModelForSeq2SeqLM.from_pretrained(base).eval(),
        "random-weight base": build_t5("tiny", vocab_size=len(tokenizer), seed=3).eval(),
    }
    for label, model in models.items():
        embed = embedder(model, tokenizer)
        for with_passage in (True, False):
            key = "with_passage" if with_passage else "question_only"
            figures[f"embedding ({label})_{key}"] = embedding_accuracy(embed, train, cases, with_passage)

    answerer = Answerer({d: str(run) for d, run in runs.items()}, dtype="fp32")
    from loraqa.evaluation.metrics import score_one

    def f1(adapter_of) -> float:
        answers = answerer.answer(
            [{"question": r["question"], "context": r["context"], "adapter": adapter_of(d)} for d, r in cases],
            batch_size=32,
        )
        return 100 * float(
            np.mean([score_one(a.answer, r["answers"]["text"], "v1")[1] for a, (_, r) in zip(answers, cases)])
        )

    figures["f1_right_adapter"] = f1(lambda d: d)
    figures["f1_routed"] = f1(lambda d: "auto")

    print(
        f"\n{len(cases)} held-out questions over {len(DOMAINS)} domains ({', '.join(DOMAINS)}), "
        f"people never seen in training"
    )
    print(f"{'routing by':40s} {'with passage':>13s} {'question only':>14s}")
    for label in ["tfidf"] + [f"embedding ({m})" for m in models]:
        print(f"{label:40s} {figures[label + '_with_passage']:12.1f}% {figures[label + '_question_only']:13.1f}%")
    print(
        f"\nanswer F1: routed by auto {figures['f1_routed']:.1f} vs the right adapter given {figures['f1_right_adapter']:.1f}"
    )
    ok = figures["tfidf_with_passage"] >= 95.0
    print(
        f"\n{'routing accuracy with passages (TF-IDF, %)':60s} {figures['tfidf_with_passage']:7.2f}  goal  95.0  "
        f"{'met' if ok else 'NOT met'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
