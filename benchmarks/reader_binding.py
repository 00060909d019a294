"""Pre-train a stand-in reader for long_documents.py and watch whether it learns whose fact is whose.

long_documents.py needs a reader that checks the name: in a window of a long document several
people buy the same kind of thing, and the asked person may not be there at all. This script
pre-trains a small T5 from scratch on that world's "buyers" passages, drawn afresh at every step
(no passage is seen twice), a third of them about a person who is not in the passage, some
among other people's passages; every --every steps it prints, on held-out passages, how often
the model gives the asked person's fact, abstains, or gives another phrase of the passage
(mostly the other buyer's fact). A reader that binds names gives the asked person's fact and
abstains when the person is absent; one that does not splits its answers between the buyers.
The saved model is what `long_documents.py --base DIR` adapts.

Measured on a 2-core CPU (AMD EPYC, AVX512-BF16): the defaults (d_model 128, 3+3 layers, batch
32, the word tokenizer below) after 3,000 steps (12 minutes): the asked person's fact 47% of
present questions, another phrase of the passage 40%, abstained on 57% of absent ones; after
7,000 steps (28 minutes) 35%, 48% and 60%: not binding. With the Unigram tokenizer, d_model 128
with 3+3 or 4+4 layers did not bind within 1,000-2,000 steps either (20-25 minutes each). It runs on a GPU when there is one (bf16
autocast), where far longer runs and larger models cost minutes.

    .venv/bin/python benchmarks/reader_binding.py --steps 20000 --save runs/reader   # GPU
    .venv/bin/python benchmarks/reader_binding.py --quick                          # seconds (CI)
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import long_documents

TEMPLATE = "squad"
NO_ANSWER = "unanswerable"


def names() -> list[str]:
    """long_documents.py's pool of one-word names, in the same order."""
    pool = long_documents.one_word_names()
    np.random.default_rng(0).shuffle(pool)
    return pool


def example(rng, pool: list[str], absent: float, crowded: float) -> tuple[dict, str]:
    """A row and its target: a buyers passage and a question about one buyer, or (share
    `absent`) about a person who is not in it; (share `crowded`) among 1-3 other people's passages."""
    picked = list(rng.choice(pool, 10, replace=False))
    context, qas = long_documents.buyers(rng, picked[0], picked[1])
    question, target = qas[int(rng.integers(len(qas)))]
    if rng.random() < absent:
        context, _ = long_documents.buyers(rng, picked[2], picked[3])
        target = NO_ANSWER
    if rng.random() < crowded:
        parts = [
            long_documents.buyers(rng, picked[4 + 2 * k], picked[5 + 2 * k])[0] for k in range(int(rng.integers(1, 4)))
        ] + [context]
        rng.shuffle(parts)
        context = " ".join(parts)
    return {"question": question, "context": context}, target


def word_tokenizer(texts: list[str], vocab_size: int = 1200):
    """A BPE tokenizer that splits at spaces and punctuation: in this world every word becomes one
    token. (The Unigram tokenizer the tests train, fitted to these repetitive passages, cuts the
    commonest words into letters: "red" is three tokens, "unanswerable" seven, a sentence 2-3
    times longer, and a name sits 8 tokens before its colour instead of 3.)"""
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Replace("\n", " ")])
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), pre_tokenizers.Punctuation()])
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator(
        texts,
        trainer=trainers.BpeTrainer(
            vocab_size=vocab_size, show_progress=False, special_tokens=["<pad>", "</s>", "<unk>"]
        ),
    )
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def held_out(rng, pool: list[str], n: int) -> dict[str, list[tuple[dict, str]]]:
    return {
        "present": [example(rng, pool, 0.0, 0.0) for _ in range(n)],
        "absent": [example(rng, pool, 1.0, 0.0) for _ in range(n)],
        "present among others": [example(rng, pool, 0.0, 1.0) for _ in range(n)],
        "absent among others": [example(rng, pool, 1.0, 1.0) for _ in range(n)],
    }


def tally(model, tokenizer, rows: list[tuple[dict, str]], device: str) -> dict:
    import torch

    from loraqa.data.prompts import render_source

    out = {"right": 0, "abstained": 0, "other_phrase": 0}
    model.eval()
    with torch.no_grad():
        for i in range(0, len(rows), 64):
            chunk = rows[i : i + 64]
            src = tokenizer([render_source(TEMPLATE, r) for r, _ in chunk], padding=True, return_tensors="pt").to(
                device
            )
            ids = model.generate(**src, max_new_tokens=12, num_beams=1, do_sample=False)
            for text, (row, target) in zip(tokenizer.batch_decode(ids, skip_special_tokens=True), chunk):
                text = text.strip()
                out["right"] += text == target
                out["abstained"] += text == NO_ANSWER
                out["other_phrase"] += text not in (target, NO_ANSWER) and bool(text) and text in row["context"]
    model.train()
    return {k: 100 * v / len(rows) for k, v in out.items()}


def main() -> None:
    ap = argparse.ArgumentParser(
        description="Pre-train a stand-in reader on buyers passages; print whether it binds names."
    )
    ap.add_argument("--steps", type=int, default=2000, help="training steps (each on fresh passages)")
    ap.add_argument("--batch-size", type=int, default=32, help="passages per step")
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=3, help="encoder layers (and as many decoder layers)")
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--lr", type=float, default=2e-3, help="peak learning rate (AdamW, linear decay)")
    ap.add_argument("--absent", type=float, default=1 / 3, help="share of questions about a person not in the passage")
    ap.add_argument("--crowded", type=float, default=0.3, help="share of passages among other people's")
    ap.add_argument("--every", type=int, default=500, help="held-out check every this many steps")
    ap.add_argument("--save", help="folder for the model and its tokenizer (for long_documents.py --base)")
    ap.add_argument("--json", help="also write the checks to this file")
    ap.add_argument("--quick", action="store_true", help="a tiny model for a few steps (CI)")
    args = ap.parse_args()
    if args.quick:
        args.steps, args.every, args.d_model, args.layers, args.batch_size = 20, 10, 32, 1, 8

    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    from loraqa.config.templates import TEMPLATES
    from loraqa.data.prompts import render_source

    device = "cuda" if torch.cuda.is_available() else "cpu"
    pool = names()
    rng = np.random.default_rng(0)
    texts = [r["context"] + " " + r["question"] for r, _ in (example(rng, pool, 0.0, 0.0) for _ in range(4000))]
    tokenizer = word_tokenizer(texts + pool + list(TEMPLATES.values()) + [NO_ANSWER])
    checks = held_out(np.random.default_rng(1), pool, 20 if args.quick else 150)
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=args.d_model,
        d_ff=2 * args.d_model,
        num_layers=args.layers,
        num_decoder_layers=args.layers,
        num_heads=args.heads,
        d_kv=args.d_model // args.heads,
        feed_forward_proj="gated-gelu",
        dropout_rate=0.0,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        tie_word_embeddings=False,
    )
    model = T5ForConditionalGeneration(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr)
    warmup = max(1, args.steps // 20)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / warmup) * max(0.0, 1 - s / args.steps)
    )
    print(
        f"{device}; d_model {args.d_model}, {args.layers}+{args.layers} layers, batch {args.batch_size}; "
        "held-out answers: right / abstained / another phrase of the passage (%)",
        flush=True,
    )
    history, losses, start = [], [], time.time()
    for step in range(1, args.steps + 1):
        batch = [example(rng, pool, args.absent, args.crowded) for _ in range(args.batch_size)]
        source = tokenizer([render_source(TEMPLATE, r) for r, _ in batch], padding=True, return_tensors="pt").to(device)
        labels = tokenizer([t for _, t in batch], padding=True, return_tensors="pt")["input_ids"].to(device)
        labels[labels == tokenizer.pad_token_id] = -100
        with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
            loss = model(**source, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        losses.append(loss.item())
        if step % args.every == 0 or step == args.steps:
            result = {name: tally(model, tokenizer, rows, device) for name, rows in checks.items()}
            history.append(
                {"step": step, "seconds": time.time() - start, "loss": float(np.mean(losses[-100:])), "checks": result}
            )
            cells = "  ".join(
                f"{name} {r['right']:.0f}/{r['abstained']:.0f}/{r['other_phrase']:.0f}" for name, r in result.items()
            )
            print(f"step {step:6d} {time.time() - start:7.0f}s loss {history[-1]['loss']:.3f}  {cells}", flush=True)
    if args.save:
        model.save_pretrained(args.save)
        tokenizer.save_pretrained(args.save)
        print(f"saved to {args.save} (benchmarks/long_documents.py --base {args.save})")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "config": vars(args), "history": history}, indent=2))


if __name__ == "__main__":
    main()
