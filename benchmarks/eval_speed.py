"""Answers per second: loraqa's evaluation vs the seed's one-question-at-a-time fp32 generation.

Model: the published flan-t5-small architecture with random weights (same cost per token as the
real checkpoint) with a LoRA adapter (q, v; r=8) attached, as during evaluation.
Inputs: SQuAD-length sources. Token counts of SQuAD v1.1 passage+question in T5's tokenizer are
right-skewed around ~160 (a few reach 500+), so lengths are drawn from a log-normal with that
median, clipped to [40, 512]. Every answer is forced to the same length (min = max new tokens)
so both styles do the same generation work.

CTranslate2 rows, in the same run: the same adapter merged into the base, converted with the
converter `loraqa export` uses (int8, float32, and int8_bfloat16 where the CPU has bf16), the same
token ids decoded greedily to the same fixed length, in batches of the same size.

    .venv/bin/python benchmarks/eval_speed.py [--questions 96] [--new-tokens 16] [--ct2-batch-size 32]
"""

from __future__ import annotations

import argparse
import copy
import json
import time

import numpy as np
import torch


def build_model():
    from peft import LoraConfig, TaskType, get_peft_model

    from loraqa.diagnostics.synthetic import build_t5

    model = build_t5("flan-t5-small", dropout=0.0)
    model = get_peft_model(
        model, LoraConfig(task_type=TaskType.SEQ_2_SEQ_LM, r=8, lora_alpha=16, target_modules=["q", "v"])
    )
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


def ctranslate2_rates(
    peft_model, sources: list[list[int]], n: int, batch_size: int, threads: int, device: str = "cpu"
) -> dict:
    """Answers/s of CTranslate2 for each quantization (peft_model is merged in place)."""
    import tempfile
    from pathlib import Path

    import ctranslate2

    from loraqa.adapters.export import converter_class
    from loraqa.diagnostics.bench import bench_data

    work = Path(tempfile.mkdtemp(prefix="loraqa-eval-speed-"))
    peft_model.merge_and_unload().to("cpu").save_pretrained(work / "merged")
    # the converter pads a short vocabulary up to the model's 32128 ids (<extra_id_N>)
    bench_data(50)[1].save_pretrained(work / "merged")
    if device == "cuda":
        quantizations = ["int8_float16", "float16", "float32"]
    else:
        supported = ctranslate2.get_supported_compute_types("cpu")
        quantizations = ["int8", "float32"] + (["int8_bfloat16"] if "int8_bfloat16" in supported else [])
    rates = {}
    for q in quantizations:
        converter_class()(str(work / "merged")).convert(str(work / q), quantization=q, force=True)
        vocab = json.loads((work / q / "shared_vocabulary.json").read_text())
        tokens = [[vocab[int(i)] for i in s] for s in sources]
        # as the engine runs it (loraqa/inference/ct2_engine.py): on a CPU one single-threaded worker
        # per core, each batch split between them; batches length-sorted, as the Answerer makes them
        workers = threads if device == "cpu" else 1
        translator = ctranslate2.Translator(
            str(work / q), device=device, inter_threads=workers, intra_threads=1 if device == "cpu" else threads
        )
        options = {
            "max_batch_size": -(-batch_size // workers),
            "beam_size": 1,
            "min_decoding_length": n,
            "max_decoding_length": n,
        }
        translator.translate_batch(tokens[:2], **options)  # warm-up
        ordered = sorted(tokens, key=len, reverse=True)
        start = time.perf_counter()
        out = [
            r
            for i in range(0, len(ordered), batch_size)
            for r in translator.translate_batch(ordered[i : i + batch_size], **options)
        ]
        rates[q] = len(sources) / (time.perf_counter() - start)
        assert all(len(r.hypotheses[0]) == n for r in out), "every answer must be the same fixed length"
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=96)
    ap.add_argument("--new-tokens", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument(
        "--ct2-batch-size", type=int, default=16, help="CTranslate2's batch, split between its workers (one per core)"
    )
    ap.add_argument("--no-ctranslate2", action="store_true", help="skip the CTranslate2 rows")
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    ap.add_argument("--json", help="also write the figures to this file")
    args = ap.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    lengths = np.clip(rng.lognormal(np.log(160), 0.45, args.questions), 40, 512).astype(int)
    sources = [list(rng.integers(5, 32000, n)) + [1] for n in lengths]
    device = args.device
    model = build_model().to(device)
    tok = IdTokenizer()
    n = args.new_tokens
    gen = dict(min_new_tokens=n, max_new_tokens=n, do_sample=False, num_beams=1)

    from loraqa.inference.generation import generate_ids
    from loraqa.modeling.precision import cpu_has_bf16

    # warm-up (first calls allocate and pick kernels)
    with torch.inference_mode():
        model.generate(**tok.pad({"input_ids": sources[:2]}).to(device), **gen)

    # the seed's style: one question per generate() call, fp32
    start = time.perf_counter()
    with torch.inference_mode():
        for s in sources:
            model.generate(**tok.pad({"input_ids": [s]}).to(device), **gen)
    if device == "cuda":
        torch.cuda.synchronize()
    seed_rate = len(sources) / (time.perf_counter() - start)

    # CTranslate2 runs after the PyTorch rows: its single-threaded workers set the process's OpenMP
    # thread count, which would slow any PyTorch measured after them
    unmerged = None if args.no_ctranslate2 else copy.deepcopy(model)

    # loraqa: length-sorted batches, bf16 weights where the CPU has bf16 units (as `loraqa eval`)
    bf16 = torch.cuda.is_bf16_supported() if device == "cuda" else cpu_has_bf16()
    from loraqa.inference.generation import prepare_for_inference

    prepare_for_inference(model, "bf16" if bf16 else "fp32")
    start = time.perf_counter()
    generate_ids(
        model, tok, sources, max_new_tokens=n, batch_size=args.batch_size, min_new_tokens=n
    )  # the same fixed answer length as above
    loraqa_rate = len(sources) / (time.perf_counter() - start)
    threads = torch.get_num_threads()
    ct2 = {} if unmerged is None else ctranslate2_rates(unmerged, sources, n, args.ct2_batch_size, threads, device)

    rows = {
        "questions": len(sources),
        "mean_source_tokens": float(lengths.mean()),
        "new_tokens": n,
        "device": device,
        "threads": threads,
        "seed_style_answers_per_s": round(seed_rate, 2),
        "loraqa_answers_per_s": round(loraqa_rate, 2),
        "loraqa_dtype": "bf16" if bf16 else "fp32",
        "batch_size": args.batch_size,
        "speedup": round(loraqa_rate / seed_rate, 2),
        "ctranslate2_batch_size": args.ct2_batch_size,
        "ctranslate2_answers_per_s": {q: round(r, 2) for q, r in ct2.items()},
        "ctranslate2_vs_pytorch": {q: round(r / loraqa_rate, 2) for q, r in ct2.items()},
    }
    if device == "cpu":
        from loraqa.modeling.precision import cpu_precision_note

        print(f"precision of the loraqa row: {cpu_precision_note()}")
    print(f"{'style':42s} {'answers/s':>10s}")
    print(f"{'seed: one question at a time, fp32':42s} {seed_rate:10.2f}")
    print(
        f"{'loraqa: length-sorted batches of ' + str(args.batch_size) + ', ' + rows['loraqa_dtype']:42s} {loraqa_rate:10.2f}"
    )
    for q, rate in ct2.items():
        print(f"{'CTranslate2 ' + q + ', batches of ' + str(args.ct2_batch_size):42s} {rate:10.2f}")
    print(f"speedup: {rows['speedup']:.2f}x  (target: at least 3x)")
    if "int8" in ct2:
        ratio = rows["ctranslate2_vs_pytorch"]["int8"]
        print(
            f"CTranslate2 int8 vs the PyTorch engine: {ratio:.2f}x  (target: at least 2x) "
            f"{'met' if ratio >= 2 else 'NOT met'}"
        )
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=2)


if __name__ == "__main__":
    main()
