"""`loraqa bench`: training and generation throughput, memory and model FLOPs utilisation.

Runs the same code path as `loraqa train` (features, LoRA, Seq2SeqTrainer) on SQuAD-length
synthetic data, so the figures are what a user gets. `--seed-style` reproduces the seed
script's padding (every input and label padded to 64, pad ids counted in the loss) inside
loraqa, so its baseline is measured by the same code on the same machine.
"""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorForSeq2Seq, TrainerCallback

from loraqa.config.templates import TEMPLATES
from loraqa.data.features import build_features
from loraqa.diagnostics.architectures import Arch, arch_from_config
from loraqa.diagnostics.synthetic import build_t5, train_tokenizer
from loraqa.inference.generation import generate_ids, prepare_for_inference
from loraqa.inference.reading import WindowShape, plan_reading
from loraqa.modeling.files import load_tokenizer
from loraqa.modeling.loading import configure_base, load_base_model, load_seq2seq_config
from loraqa.modeling.lora import add_lora
from loraqa.modeling.precision import resolve_device, resolve_dtype
from loraqa.training.trainer import TrainerData, build_trainer, micro_batches

SYLLABLES = [
    "ba",
    "be",
    "bi",
    "bo",
    "bu",
    "da",
    "de",
    "di",
    "do",
    "du",
    "ka",
    "ke",
    "ki",
    "ko",
    "ku",
    "la",
    "le",
    "li",
    "lo",
    "lu",
    "ma",
    "me",
    "mi",
    "mo",
    "mu",
    "na",
    "ne",
    "ni",
    "no",
    "nu",
    "ra",
    "re",
    "ri",
    "ro",
    "ru",
    "sa",
    "se",
    "si",
    "so",
    "su",
    "ta",
    "te",
    "ti",
    "to",
    "tu",
]


def bench_data(n: int = 400, seed: int = 0):
    """Rows with SQuAD v1.1's shape in tokens (passage median ~140, question ~12, answer ~3),
    and a tokenizer that keeps each made-up word one token, so lengths are what they say."""
    rng = np.random.default_rng(seed)
    words = sorted({"".join(rng.choice(SYLLABLES, 3)) for _ in range(3000)})
    rows = []
    for i in range(n):
        ctx_len = int(np.clip(rng.lognormal(np.log(140), 0.4), 40, 600))
        ctx = list(rng.choice(words, ctx_len))
        a_len = int(rng.integers(1, 6))
        start = int(rng.integers(0, ctx_len - a_len))
        answer = " ".join(ctx[start : start + a_len])
        context = " ".join(ctx)
        question = " ".join(rng.choice(words, int(rng.integers(8, 16)))) + "?"
        rows.append(
            {
                "id": str(i),
                "title": "",
                "context": context,
                "question": question,
                "answers": {"text": [answer], "answer_start": [context.find(answer)]},
            }
        )
    texts = [" ".join(words)] * 3 + list(TEMPLATES.values()) + ["unanswerable"]
    return rows, train_tokenizer(texts, vocab_size=len(words) + 400)


def matmul_peak_flops(device: str, dtype: torch.dtype, n: int = 2048, reps: int = 12) -> float:
    """Best-of-N dense matmul FLOP/s on this device and dtype: the denominator of MFU."""
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):  # warm-up: kernel selection, page faults, clocks
        (a @ b).sum().item()
    best = float("inf")
    for _ in range(reps):
        if device == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        (a @ b).sum().item()
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def forward_flops(arch: Arch, src: int, tgt: int) -> float:
    """Matmul FLOPs of one forward pass over one example (src encoder, tgt decoder tokens)."""
    d, inner, ff, v = arch.d_model, arch.inner, arch.d_ff, arch.vocab_size
    ffn = (3 if arch.gated else 2) * d * ff
    enc = arch.num_layers * (src * (4 * d * inner + ffn) + 2 * src * src * inner)
    dec = arch.num_decoder_layers * (
        tgt * (4 * d * inner + 2 * d * inner + ffn)
        + src * 2 * d * inner
        + 2 * tgt * tgt * inner
        + 2 * tgt * src * inner
    )
    return 2.0 * (enc + dec + tgt * d * v)


class StepTimer(TrainerCallback):
    def __init__(self, warmup: int):
        self.warmup, self.start, self.end = warmup, 0.0, 0.0

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.warmup:
            self.start = time.perf_counter()
        self.end = time.perf_counter()


class CountingCollator:
    """Wraps the collator to record each micro-batch's real (unpadded) token counts."""

    def __init__(self, inner):
        self.inner, self.batches = inner, []

    def __call__(self, features):
        self.batches.append(
            (len(features), [len(f["input_ids"]) for f in features], [len(f["labels"]) for f in features])
        )
        return self.inner(features)


def train_bench(cfg, model, tokenizer, rows, seed_style: bool, warmup: int, device: str, dtype: str) -> dict:
    """Time cfg.train.max_steps steps, the first `warmup` of them not counted."""
    steps = cfg.train.max_steps - warmup
    configure_base(model, cfg.model.dropout, cfg.model.attention, device)
    model = add_lora(model, cfg.lora, cfg.train.gradient_checkpointing, fast_kernels=cfg.model.fast_kernels)
    feats, _ = build_features(tokenizer, rows, cfg.data, train=True)
    cfg.train.eval_steps = 0
    cfg.train.save_steps = cfg.train.logging_steps = 10**6
    run_dir = Path(tempfile.mkdtemp(prefix="loraqa-bench-"))
    trainer = build_trainer(cfg, model, tokenizer, TrainerData(feats, None, []), run_dir, dtype, device, [])
    if seed_style:  # the seed: everything padded to 64, labels padded with the pad id (counted in the loss)
        trainer.data_collator = DataCollatorForSeq2Seq(
            tokenizer, model=model, padding="max_length", max_length=64, label_pad_token_id=tokenizer.pad_token_id
        )
    counter = CountingCollator(trainer.data_collator)
    trainer.data_collator = counter
    timer = StepTimer(warmup)
    trainer.add_callback(timer)
    trainer.args.disable_tqdm = True
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    seconds = timer.end - timer.start
    ga = trainer.args.gradient_accumulation_steps  # fp32 on a CPU may split steps finer (train.fp32_cpu_micro_batch)
    timed = counter.batches[warmup * ga : (warmup + steps) * ga]
    examples = sum(b[0] for b in timed)
    tokens = sum(sum(b[1]) + sum(b[2]) for b in timed)
    arch = arch_from_config(model.get_base_model().config)
    # Model FLOPs of a frozen-base LoRA step: forward + backward through activations (2x the
    # forward); frozen weights need no weight gradients, and recomputation is not counted.
    flops = sum(2 * forward_flops(arch, s, t) for b in timed for s, t in zip(b[1], b[2]))
    peak_mem = (
        torch.cuda.max_memory_allocated() / 2**30
        if device == "cuda"
        else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    )
    return {
        "examples_per_s": examples / seconds,
        "tokens_per_s": tokens / seconds,
        "flops_per_s": flops / seconds,
        "seconds": seconds,
        "steps": steps,
        "peak_memory_gb": peak_mem,
        "memory_kind": "cuda allocated" if device == "cuda" else "process RSS",
    }


def generation_bench(model, tokenizer, rows, cfg, dtype: str, n: int = 64) -> float:
    prepare_for_inference(model, dtype)
    sources = [
        plan_reading(
            tokenizer,
            r["question"],
            r["context"],
            WindowShape(cfg.data.template, cfg.data.max_source_length, cfg.data.window_overlap),
        )[0].source
        for r in rows[:n]
    ]
    start = time.perf_counter()
    generate_ids(
        model,
        tokenizer,
        sources,
        cfg.eval.max_new_tokens,
        cfg.eval.batch_size,
        min_new_tokens=min(8, cfg.eval.max_new_tokens),
    )
    return len(sources) / (time.perf_counter() - start)


def use_seed_setup(cfg) -> None:
    """The seed script's code path: plain transformers + PEFT, checkpointing on, everything padded to 64."""
    cfg.data.max_source_length = cfg.data.max_target_length = 64
    cfg.train.gradient_checkpointing, cfg.model.fast_kernels, cfg.model.attention = True, False, "eager"


def run_bench(
    cfg, random_init: str | None, seed_style: bool, steps: int, warmup: int, generation: bool, examples: int = 400
) -> dict:
    if seed_style:
        use_seed_setup(cfg)
    rows, tokenizer = bench_data(examples)
    device = resolve_device(cfg.model.device)
    if random_init:
        model = build_t5(random_init, dropout=0.1).to(device)
        model_type, name = "t5", f"random-init {random_init}"
    else:
        config = load_seq2seq_config(cfg.model.name)
        model_type, name = config.model_type, cfg.model.name
        tokenizer = load_tokenizer(cfg.model.name)
    dtype = resolve_dtype(cfg.model.dtype, device, model_type)
    if random_init and dtype == "bf16":  # as load_base_model stores a bf16 run's frozen weights
        model.to(torch.bfloat16)
    elif not random_init:
        model = load_base_model(cfg.model.name, dtype, device, allow_pickle=cfg.model.allow_pickle, config=config)
    torch.manual_seed(cfg.train.seed)
    peak = matmul_peak_flops(device, torch.bfloat16 if dtype == "bf16" else torch.float32)
    result = {
        "model": name,
        "preset": cfg.preset,
        "seed_style": seed_style,
        "device": device,
        "dtype": dtype,
        "threads": torch.get_num_threads(),
        "batch_size": cfg.train.batch_size,
        "grad_accum": cfg.train.grad_accum,
        "micro_batch": micro_batches(cfg.train, dtype, device)[0],
        "gradient_checkpointing": cfg.train.gradient_checkpointing,
        "matmul_peak_tflops": peak / 1e12,
    }
    cfg.train.max_steps = warmup + steps
    train = train_bench(cfg, model, tokenizer, rows, seed_style, warmup, device, dtype)
    # Measured again afterwards and the higher kept: on a shared or throttling machine one
    # measurement can read far below what the device does (seen here: 0.4 to 2.1 TFLOP/s).
    peak = max(peak, matmul_peak_flops(device, torch.bfloat16 if dtype == "bf16" else torch.float32))
    result["matmul_peak_tflops"] = peak / 1e12
    result.update(train)
    result["mfu"] = train["flops_per_s"] / peak
    if generation:
        result["answers_per_s"] = generation_bench(model, tokenizer, rows, cfg, dtype)
    return result


def format_result(result: dict) -> list[str]:
    """The lines `loraqa bench` prints."""
    labels = [
        ("examples/s", "examples_per_s", "{:.2f}"),
        ("real tokens/s", "tokens_per_s", "{:.0f}"),
        ("MFU (of measured matmul peak)", "mfu", "{:.1%}"),
        ("matmul peak TFLOP/s", "matmul_peak_tflops", "{:.2f}"),
        ("peak memory GiB (" + result["memory_kind"] + ")", "peak_memory_gb", "{:.2f}"),
        ("answers/s (generation)", "answers_per_s", "{:.2f}"),
    ]
    lines = [
        f"{result['model']} preset={result['preset']} seed_style={result['seed_style']} "
        f"{result['device']} {result['dtype']} threads={result['threads']}"
    ]
    lines += [f"  {label:36s} {fmt.format(result[key])}" for label, key, fmt in labels if key in result]
    return lines
