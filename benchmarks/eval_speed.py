"""Answers per second: loraqa's evaluation vs the seed's one-question-at-a-time fp32 generation.

Model: the published flan-t5-small architecture with random weights (same cost per token as the
real checkpoint) with a LoRA adapter (q, v; r=8) attached, as during evaluation.
Inputs: SQuAD-length sources. Token counts of SQuAD v1.1 passage+question in T5's tokenizer are
right-skewed around ~160 (a few reach 500+), so lengths are drawn from a log-normal with that
median, clipped to [40, 512]. Every answer is forced to the same length (min = max new tokens)
so both styles do the same generation work.

    .venv/bin/python benchmarks/eval_speed.py [--questions 96] [--new-tokens 16]
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def build_model():
    from peft import LoraConfig, TaskType, get_peft_model

    from loraqa.diagnostics.synthetic import build_t5

    model = build_t5("flan-t5-small", dropout=0.0)
    model = get_peft_model(model, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=8, lora_alpha=16, target_modules=["q", "v"]))
    return model.eval()


class IdTokenizer:
    """Just enough of a tokenizer for generate_ids: padding and decoding of raw ids."""

    pad_token_id, eos_token_id = 0, 1

    def pad(self, batch, return_tensors="pt"):
        ids = batch["input_ids"]
        width = max(len(x) for x in ids)
        input_ids = torch.zeros(len(ids), width, dtype=torch.long)
        mask = torch.zeros(len(ids), width, dtype=torch.long)
        for i, x in enumerate(ids):
            input_ids[i, : len(x)] = torch.tensor(x)
            mask[i, : len(x)] = 1
        from transformers import BatchEncoding

        return BatchEncoding({"input_ids": input_ids, "attention_mask": mask})

    def batch_decode(self, out, skip_special_tokens=True):
        return [" ".join(map(str, row.tolist())) for row in out]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(160), 0.45, args.questions), 40, 512).astype(int)
    sources = [list(rng.integers(5, 32000, n)) + [1] for n in lengths]
    model = build_model()
    tok = IdTokenizer()
    n = args.new_tokens
    gen = dict(min_new_tokens=n, max_new_tokens=n, do_sample=False, num_beams=1)

    from loraqa.inference.generation import generate_ids
    from loraqa.modeling.precision import cpu_has_bf16

    # warm-up (first calls allocate and pick kernels)
    with torch.inference_mode():
        model.generate(**tok.pad({"input_ids": sources[:2]}), **gen)

    # the seed's style: one question per generate() call, fp32
    start = time.perf_counter()
    with torch.inference_mode():
        for s in sources:
            model.generate(**tok.pad({"input_ids": [s]}), **gen)
    seed_rate = len(sources) / (time.perf_counter() - start)

    # loraqa: length-sorted batches, bf16 weights where the CPU has bf16 units (as `loraqa eval`)
    bf16 = cpu_has_bf16()
    from loraqa.inference.generation import prepare_for_inference

    prepare_for_inference(model, "bf16" if bf16 else "fp32")
    start = time.perf_counter()
    generate_ids(model, tok, sources, max_new_tokens=n, batch_size=args.batch_size,
                 min_new_tokens=n)  # the same fixed answer length as above
    loraqa_rate = len(sources) / (time.perf_counter() - start)

    rows = {
        "questions": len(sources), "mean_source_tokens": float(lengths.mean()), "new_tokens": n,
        "threads": torch.get_num_threads(), "seed_style_answers_per_s": round(seed_rate, 2),
        "loraqa_answers_per_s": round(loraqa_rate, 2), "loraqa_dtype": "bf16" if bf16 else "fp32",
        "batch_size": args.batch_size, "speedup": round(loraqa_rate / seed_rate, 2),
    }
    print(f"{'style':42s} {'answers/s':>10s}")
    print(f"{'seed: one question at a time, fp32':42s} {seed_rate:10.2f}")
    print(f"{'loraqa: length-sorted batches of ' + str(args.batch_size) + ', ' + rows['loraqa_dtype']:42s} {loraqa_rate:10.2f}")
    print(f"speedup: {rows['speedup']:.2f}x  (target: at least 3x)")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
