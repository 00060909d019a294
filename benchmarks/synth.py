"""Synthetic-data check: an adapter trained only on pairs `loraqa synth` wrote, against one trained
on gold pairs for the same passages, in the learning check's world (no pretrained weights needed).

1. The world's base model (pre-trained on family A; benchmarks/learning_check.py) gets two
   adapters from the gold family-B pairs of 600 people: a QA adapter (the round-trip reader) and
   a question-generation adapter (data.task=question_generation).
2. For the passages of 300 people neither adapter saw, `loraqa synth` writes questions for each
   passage's answer candidates and keeps the pairs the reader answers the same way.
3. A QA adapter trained on the kept synthetic pairs only, and one trained on the gold pairs of
   the same passages (three per passage), answer the same 100 held-out gold questions about
   people never seen: goal, the synthetic adapter's EM >= 80% of the gold one's.
   The run is repeated with the name check on (the default; this world's writer garbles names).
4. The OpenAI-compatible path end to end: `loraqa serve` serves the question-generation adapter,
   `loraqa synth --generator openai --ask questions` asks it through the official openai client
   for the same passages; its pairs go through the same checks, and a QA adapter trained on them
   answers the same held-out questions (it should match the local generator's pairs and EM).
5. Planted corrupt pairs on the same passages (answers swapped between a passage's questions;
   answers that are not in the passage) beside the good ones go through the same filter: goal,
   >= 90% of the corrupt ones removed and >= 80% of the good ones kept.
6. Steps 2, 3 and 5 again with the likelihood round trip (`--roundtrip-margin`, --margin): a pair
   the reader answers otherwise is kept when it finds the pair's answer nearly as likely as its own.

    .venv/bin/python benchmarks/synth.py [--quick] [--base runs/.../base-model] [--steps N] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from learning_check import build_world, family_b, loraqa, pretrain, write_jsonl
from serve_load import free_port, launch, wait_until_up

LORA = [
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
]

# The four QA adapters compared on the held-out questions (gold, synthetic, margin, served): a
# document's questions on one side of the split, and half the reader's learning rate: at 2e-3 the
# gold one diverged in bf16 after 200 steps (loss 1.0 -> 6, gradient norms in the thousands).
COMPARED = ("--set", "data.split_by=document", "--set", "train.learning_rate=1e-3")
# This world's writer never learned to copy the name of someone it has not seen (its base model
# is a few-million-parameter model pre-trained on a toy world): nearly every question it writes
# names somebody the passage never mentions ("What did Retomo buy?"), and the name check, on by
# default, drops them all (measured and printed once). The compared runs go on without it; a
# pretrained writer copies names.
ANY_NAMES = ("--any-names",)


def gold_rows(names: list[str], rng) -> list[dict]:
    """One passage per person, with all three of its questions."""
    rows = []
    for i, name in enumerate(names):
        other = names[(i + 1 + int(rng.integers(len(names) - 1))) % len(names)]
        context, qas = family_b(rng, name, other)
        for q, a in qas:
            rows.append(
                {
                    "id": f"gold-{len(rows)}",
                    "title": "",
                    "context": context,
                    "question": q,
                    "answers": {"text": [a], "answer_start": [context.find(a)]},
                    "document": f"person-{i}",
                }
            )
    return rows


def train(base: Path, data: Path, out: Path, steps: int, *extra: str, reuse: bool = False) -> Path:
    """A LoRA run; reuse: keep one a --workdir already holds (the reader and the writer)."""
    if reuse and (out / "adapter" / "adapter_config.json").is_file():
        return out
    loraqa(
        "train",
        "--preset",
        "default",
        "--model",
        str(base),
        "--data",
        str(data),
        "--output",
        str(out),
        "--overwrite",
        "--set",
        f"train.max_steps={steps}",
        *LORA,
        *extra,
    )
    return out


def exact_match(run: Path, data: Path, out: Path) -> float:
    loraqa("eval", str(run), "--data", str(data), "--output", str(out))
    return json.loads((out / "summary.json").read_text())["exact_match"]


def planted(rows: list[dict], rng) -> tuple[list, list, list]:
    """(passages, good drafts, corrupt drafts): per passage its three gold pairs, one question
    with another question's answer (quoted from the passage), one with an answer from elsewhere."""
    from loraqa.synth.generators import Draft
    from loraqa.synth.sampling import SourcePassage

    by_context: dict[str, list[dict]] = {}
    for r in rows:
        by_context.setdefault(r["context"], []).append(r)
    passages, good, bad = [], [], []
    contexts = list(by_context)
    for context, qs in by_context.items():
        i = len(passages)
        passages.append(SourcePassage(qs[0]["document"], "", "planted", None, 0, len(context), context))
        good += [Draft(i, q["question"], q["answers"]["text"][0]) for q in qs]
        # Each corrupt pair goes under a document of its own: a repeated question would be dropped
        # as a repeat, and this measures the round trip.
        a, b = qs[int(rng.integers(len(qs)))], None
        others = [
            q
            for q in qs
            if q["answers"]["text"][0] not in a["answers"]["text"][0]
            and a["answers"]["text"][0] not in q["answers"]["text"][0]
        ]
        if others:
            b = others[int(rng.integers(len(others)))]
            passages.append(
                SourcePassage(f"{qs[0]['document']}-swapped", "", "planted", None, 0, len(context), context)
            )
            bad.append(Draft(len(passages) - 1, a["question"], b["answers"]["text"][0]))
        elsewhere = by_context[contexts[(contexts.index(context) + 1) % len(contexts)]][0]["answers"]["text"][0]
        if elsewhere not in context:
            passages.append(SourcePassage(f"{qs[0]['document']}-absent", "", "planted", None, 0, len(context), context))
            bad.append(Draft(len(passages) - 1, a["question"], elsewhere))
    return passages, good, bad


def filter_check(reader_run: Path, rows: list[dict], rng, margins: list[float]) -> dict:
    """How many planted corrupt pairs the checks remove, and how many good ones they keep: by the
    round trip's F1 alone, and with each likelihood margin (one pass: every pair the F1 drops is
    scored once, and a margin keeps those within it)."""
    from loraqa.inference.answerer import Answerer
    from loraqa.synth.generators import GeneratorStats
    from loraqa.synth.pipeline import Reader, synthesise

    passages, good, bad = planted(rows, rng)
    reader = Reader(Answerer({"reader": str(reader_run)}, dtype="fp32"), "reader", margin=float("inf"))
    planted_pairs = SimpleNamespace(label="planted", stats=GeneratorStats(), generate=lambda *_a, **_k: good + bad)
    kept, _ = synthesise(passages, planted_pairs, reader)
    # a pair kept with the reader's answer span is known by the answer it was planted with
    gap = {
        (r["document"], r["question"], r.get("generated_answer", r["answers"]["text"][0])): r.get(
            "roundtrip_logprob_gap"
        )
        for r in kept
    }

    def key(d):
        return passages[d.passage].document, d.question, d.answer

    def shares(margin: float | None) -> dict:
        def kept_(d) -> bool:
            return key(d) in gap and (gap[key(d)] is None or (margin is not None and gap[key(d)] <= margin))

        return {
            "good_kept": round(100 * sum(map(kept_, good)) / len(good), 1),
            "corrupt_removed": round(100 * sum(not kept_(d) for d in bad) / len(bad), 1),
        }

    return {"good": len(good), "corrupt": len(bad), **shares(None), "margins": {str(m): shares(m) for m in margins}}


def kind_of(question: str) -> str:
    return (
        "colour"
        if question.startswith("What colour")
        else "place"
        if question.startswith("Where")
        else "thing"
        if question.startswith("What did")
        else "other"
    )


def correct_share(path: Path, gold: list[dict]) -> dict:
    """Per question kind, the kept pairs and how many of them carry the gold answer of that kind
    for their passage (the world's passages have one answer per kind, whoever the question names)."""
    truth = {(r["context"].strip(), kind_of(r["question"])): r["answers"]["text"][0] for r in gold}
    out: dict = {}
    for r in map(json.loads, path.open()):
        k = kind_of(r["question"])
        n, right = out.get(k, (0, 0))
        out[k] = (n + 1, right + (truth.get((r["context"].strip(), k)) == r["answers"]["text"][0]))
    return {k: {"kept": n, "correct": right} for k, (n, right) in sorted(out.items())}


def served_synth(writer: Path, reader: Path, docs: Path, out: Path) -> float:
    """`loraqa synth --generator openai` against a `loraqa serve` process serving the question
    writer; returns the seconds synth took."""
    port, key = free_port(), "synth-benchmark"
    env = {**os.environ, "LORAQA_API_KEY": key, "OPENAI_API_KEY": key}
    proc = launch([sys.executable, "-m", "loraqa", "serve", "--port", str(port), "-a", f"qg={writer}"], env)
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc)
        t0 = time.time()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "loraqa",
                "synth",
                "--input",
                str(docs),
                "--generator",
                "openai",
                "--ask",
                "questions",
                "--base-url",
                f"{url}/v1",
                "--model",
                "qg",
                "--concurrency",
                "16",
                "--reader",
                str(reader),
                "--per-passage",
                "8",
                *ANY_NAMES,
                "-o",
                str(out),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            env=env,
        )
        return time.time() - t0
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def main() -> None:
    ap = argparse.ArgumentParser(description="An adapter from synthetic pairs against one from gold pairs.")
    ap.add_argument("--quick", action="store_true", help="fewer people and steps")
    ap.add_argument(
        "--workdir",
        help="keep the files here (default: a temporary folder); its base model, reader "
        "and writer are reused by the next run",
    )
    ap.add_argument(
        "--base", help="reuse a base model pre-trained by benchmarks/learning_check.py (its base-model folder)"
    )
    ap.add_argument("--steps", type=int, help="LoRA steps of every adapter (default 1200; --quick 150)")
    ap.add_argument(
        "--margin",
        type=float,
        default=1.0,
        help="the likelihood margin (--roundtrip-margin) of the second synth run (default 1.0)",
    )
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    os.environ.setdefault("WANDB_MODE", "offline")
    world = build_world(args.quick)
    steps = args.steps or (150 if args.quick else 1200)
    unseen_n = 100 if args.quick else 300
    work = Path(args.workdir or tempfile.mkdtemp(prefix="loraqa-synth-"))
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.base:
        base = Path(args.base)
    elif (work / "base-model" / "config.json").is_file():  # pre-trained by an earlier run in this --workdir
        base = work / "base-model"
    else:
        base = pretrain(world["a_train"], world["tokenizer"], work, 300 if args.quick else 1500, seed=0)
    t_pre = time.time() - t0
    b_train, b_test = world["b_train"], world["b_test"]
    # b_train asks about the first len(b_train) seen people: the next ones are new to both adapters
    unseen = world["seen"][len(b_train) : len(b_train) + unseen_n]
    gold = gold_rows(unseen, np.random.default_rng(7))
    files = {
        k: write_jsonl(work / f"{k}.jsonl", v) for k, v in {"b_train": b_train, "b_test": b_test, "gold": gold}.items()
    }
    t0 = time.time()
    reader = train(base, files["b_train"], work / "reader", steps, reuse=True)
    writer = train(
        base,
        files["b_train"],
        work / "writer",
        steps,
        "--set",
        "data.task=question_generation",
        "--set",
        "data.max_target_length=24",
        reuse=True,
    )
    t_adapters = time.time() - t0
    # the unseen people's passages as files (one per person), read by `loraqa synth --input`
    docs = work / "documents"
    docs.mkdir(exist_ok=True)
    for r in gold[::3]:
        (docs / f"{r['document']}.txt").write_text(r["context"] + "\n")
    synthetic = work / "synthetic.jsonl"
    t0 = time.time()
    loraqa(
        "synth",
        "--input",
        str(docs),
        "-a",
        str(writer),
        "--reader",
        str(reader),
        "--per-passage",
        "8",
        *ANY_NAMES,
        "-o",
        str(synthetic),
    )
    t_synth = time.time() - t0
    report = json.loads((work / "synthetic.jsonl.report.json").read_text())
    named = work / "synthetic-names-checked.jsonl"
    loraqa(
        "synth",
        "--input",
        str(docs),
        "-a",
        str(writer),
        "--reader",
        str(reader),
        "--per-passage",
        "8",
        "-o",
        str(named),
    )
    named_report = json.loads((work / "synthetic-names-checked.jsonl.report.json").read_text())
    loose = work / "synthetic-margin.jsonl"
    loraqa(
        "synth",
        "--input",
        str(docs),
        "-a",
        str(writer),
        "--reader",
        str(reader),
        "--per-passage",
        "8",
        *ANY_NAMES,
        "--roundtrip-margin",
        str(args.margin),
        "-o",
        str(loose),
    )
    loose_report = json.loads((work / "synthetic-margin.jsonl.report.json").read_text())
    served = work / "served.jsonl"
    t_served = served_synth(writer, reader, docs, served)
    served_report = json.loads((work / "served.jsonl.report.json").read_text())

    def pairs(path):
        return [(r["document"], r["question"], r["answers"]["text"][0]) for r in map(json.loads, path.open())]

    same = len(set(pairs(served)) & set(pairs(synthetic)))
    from_synthetic = train(base, synthetic, work / "qa-synthetic", steps, *COMPARED)
    from_gold = train(base, files["gold"], work / "qa-gold", steps, *COMPARED)
    em_synth = exact_match(from_synthetic, files["b_test"], work / "eval-synthetic")
    em_gold = exact_match(from_gold, files["b_test"], work / "eval-gold")
    em_reader = exact_match(reader, files["b_test"], work / "eval-reader")
    from_served = train(base, served, work / "qa-served", steps, *COMPARED)
    em_served = exact_match(from_served, files["b_test"], work / "eval-served")
    from_loose = train(base, loose, work / "qa-margin", steps, *COMPARED)
    em_loose = exact_match(from_loose, files["b_test"], work / "eval-margin")
    filtered = filter_check(reader, gold, np.random.default_rng(3), sorted({0.5, 1.0, 2.0, 3.0, args.margin}))
    ratio = 100 * em_synth / em_gold if em_gold else float("nan")
    ratio_loose = 100 * em_loose / em_gold if em_gold else float("nan")
    kinds = correct_share(synthetic, gold)
    right = sum(v["correct"] for v in kinds.values())
    print(
        f"\n{len(unseen)} unseen people's passages; pre-training {t_pre:.0f} s, reader and writer {t_adapters:.0f} s, "
        f"synth {t_synth:.0f} s"
    )
    print(
        f"synth: {report['generated']} pairs generated, {report['kept']} kept ({report['answers_from_reader']} with "
        f"the reader's answer span); dropped {report['dropped']}"
    )
    print(
        f"kept pairs carrying their passage's gold answer: {right} of {report['kept']}; by question kind "
        + ", ".join(f"{k} {v['correct']}/{v['kept']}" for k, v in kinds.items())
    )
    print(
        f"with the name check (the default): {named_report['kept']} kept; "
        f"{named_report['dropped'].get('name_not_in_passage', 0)} of {named_report['generated']} questions name "
        f"somebody the passage never mentions"
    )
    print(f"{'QA adapter trained on':40s} {'pairs':>6s} {'EM on 100 held-out gold questions':>34s}")
    print(f"{'gold pairs of those passages':40s} {len(gold):6d} {em_gold:34.1f}")
    print(f"{'kept synthetic pairs only':40s} {report['kept']:6d} {em_synth:34.1f}")
    print(
        f"{'kept with --roundtrip-margin ' + format(args.margin, 'g'):40s} {loose_report['kept']:6d} {em_loose:34.1f}"
    )
    print(f"{'pairs from loraqa serve (openai client)':40s} {served_report['kept']:6d} {em_served:34.1f}")
    print(f"{'(the reader: gold pairs of 600 others)':40s} {len(b_train):6d} {em_reader:34.1f}")
    g = served_report["generator"]
    print(
        f"served: {g['requests']} requests in {t_served:.0f} s ({g['requests'] / t_served:.1f}/s), "
        f"{g['prompt_tokens']} prompt + {g['completion_tokens']} completion tokens, {g['malformed']} malformed, "
        f"{g['extra']['failed']} failed; {same} of its {served_report['kept']} kept pairs are the local "
        f"generator's ({report['kept']} kept)"
    )
    for label, r in (("round trip (F1)", ratio), (f"margin {args.margin:g}", ratio_loose)):
        print(f"synthetic / gold EM, {label}: {r:.1f}%  (goal >= 80%) {'met' if r >= 80 else 'NOT met'}")
    print(f"planted pairs: {filtered['corrupt']} corrupt, {filtered['good']} good")
    for label, f in [("round trip (F1 >= 0.5)", filtered)] + [
        (f"+ likelihood margin {m}", v) for m, v in filtered["margins"].items()
    ]:
        print(
            f"  {label:30s} corrupt removed {f['corrupt_removed']:5.1f}% (goal >= 90%) "
            f"{'met' if f['corrupt_removed'] >= 90 else 'NOT met'}; good kept {f['good_kept']:5.1f}% "
            f"(goal >= 80%) {'met' if f['good_kept'] >= 80 else 'NOT met'}"
        )
    figures = {
        "unseen_people": len(unseen),
        "synth": {k: report[k] for k in ("generated", "kept", "dropped", "answers_from_reader")},
        "kinds": kinds,
        "kept_correct": right,
        "names_checked": {"kept": named_report["kept"], "dropped": named_report["dropped"]},
        "em_gold": em_gold,
        "em_synthetic": em_synth,
        "em_reader": em_reader,
        "ratio": round(ratio, 1),
        "filter": filtered,
        "margin": {
            "margin": args.margin,
            "kept": loose_report["kept"],
            "kept_by_likelihood": loose_report["kept_by_likelihood"],
            "em": em_loose,
            "ratio": round(ratio_loose, 1),
        },
        "served": {
            "kept": served_report["kept"],
            "same_as_local": same,
            "em": em_served,
            "requests": g["requests"],
            "seconds": round(t_served, 1),
            "prompt_tokens": g["prompt_tokens"],
            "completion_tokens": g["completion_tokens"],
        },
    }
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
