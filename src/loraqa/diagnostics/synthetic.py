"""Models and tokenizers built locally, with no download.

- `train_tokenizer`: a SentencePiece-style (Unigram + Metaspace) fast tokenizer trained on
  given text, with T5's special-token layout (pad 0, eos 1, unk 2) and EOS appended.
- `build_t5`: a randomly initialised T5 from a named architecture. `flan-t5-small` and
  `flan-t5-base` are the published shapes (untied lm_head), so their cost per token is exactly
  that of the real checkpoints; `tiny` is for tests.

Used by the tests, the benchmarks (`--random-init`) and the learning check.
"""

from __future__ import annotations

from pathlib import Path

from loraqa.diagnostics.architectures import KNOWN_ARCHITECTURES, Arch

FLAN_T5_VOCAB = 32128
ARCHITECTURES: dict[str, Arch] = {
    "tiny": Arch(d_model=64, d_ff=128, num_layers=2, num_decoder_layers=2, num_heads=4, d_kv=16, vocab_size=800),
    "flan-t5-small": KNOWN_ARCHITECTURES["google/flan-t5-small"],
    "flan-t5-base": KNOWN_ARCHITECTURES["google/flan-t5-base"],
}


def train_tokenizer(texts: list[str], vocab_size: int = 800):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=["<pad>", "</s>", "<unk>"], unk_token="<unk>", show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>")


def build_t5(arch: str = "tiny", vocab_size: int | None = None, seed: int = 0, dropout: float = 0.1):
    import torch
    from transformers import T5Config, T5ForConditionalGeneration

    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch}; choose from {', '.join(ARCHITECTURES)}")
    torch.manual_seed(seed)
    config = T5Config(  # type: ignore[call-arg]  # decoder_start_token_id, tie_word_embeddings: PretrainedConfig's, taken by **kwargs
        vocab_size=vocab_size or FLAN_T5_VOCAB,
        feed_forward_proj="gated-gelu",
        dropout_rate=dropout,
        decoder_start_token_id=0,
        pad_token_id=0,
        eos_token_id=1,
        **ARCHITECTURES[arch].layer_shapes(),
        # flan-t5 (T5 v1.1) configs say false: no decoder-output rescaling, separate lm_head
        tie_word_embeddings=False,
    )
    model = T5ForConditionalGeneration(config)
    # flan-t5 has a separate lm_head; a T5Config built in code ties it to the embedding.
    model.lm_head.weight = torch.nn.Parameter(model.shared.weight.detach().clone() * config.d_model**-0.5)
    model.config.tie_word_embeddings = False
    return model


def save_model_dir(
    out: str | Path,
    arch: str = "tiny",
    tokenizer=None,
    texts: list[str] | None = None,
    vocab_size: int = 800,
    seed: int = 0,
    dropout: float = 0.1,
) -> Path:
    """A local model directory (weights, config, tokenizer) that from_pretrained loads."""
    out = Path(out)
    if tokenizer is None:
        tokenizer = train_tokenizer(texts or [], vocab_size=vocab_size)
    v = len(tokenizer) if arch == "tiny" else max(FLAN_T5_VOCAB, len(tokenizer))
    model = build_t5(arch, vocab_size=v, seed=seed, dropout=dropout)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
