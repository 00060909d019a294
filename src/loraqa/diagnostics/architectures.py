"""T5 shapes: the published flan-t5 architectures, and the shape of any loaded T5 config.

Used to size a model before any download (the memory estimate), to count model FLOPs (bench),
and to build random-weight models of exactly the published cost (synthetic).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Arch:
    d_model: int
    d_ff: int
    num_layers: int
    num_decoder_layers: int
    num_heads: int
    d_kv: int
    vocab_size: int
    gated: bool = True
    tied_lm_head: bool = False

    @property
    def inner(self) -> int:
        return self.num_heads * self.d_kv

    def parameters(self) -> int:
        d, inner = self.d_model, self.inner
        attn = 4 * d * inner
        ff = (3 if self.gated else 2) * d * self.d_ff
        enc = self.num_layers * (attn + ff + 2 * d)
        dec = self.num_decoder_layers * (2 * attn + ff + 3 * d)
        emb = self.vocab_size * d
        rel_bias = 2 * 32 * self.num_heads
        return emb + (0 if self.tied_lm_head else emb) + enc + dec + 2 * d + rel_bias

    def layer_shapes(self) -> dict:
        """The T5Config keywords of the layer shapes (vocabulary and head tying are set apart)."""
        return dict(
            d_model=self.d_model,
            d_ff=self.d_ff,
            num_layers=self.num_layers,
            num_decoder_layers=self.num_decoder_layers,
            num_heads=self.num_heads,
            d_kv=self.d_kv,
        )


KNOWN_ARCHITECTURES = {
    "google/flan-t5-small": Arch(512, 1024, 8, 8, 6, 64, 32128),
    "google/flan-t5-base": Arch(768, 2048, 12, 12, 12, 64, 32128),
    "google/flan-t5-large": Arch(1024, 2816, 24, 24, 16, 64, 32128),
}


def arch_from_config(c) -> Arch:
    return Arch(
        d_model=c.d_model,
        d_ff=c.d_ff,
        num_layers=c.num_layers,
        num_decoder_layers=getattr(c, "num_decoder_layers", None) or c.num_layers,
        num_heads=c.num_heads,
        d_kv=c.d_kv,
        vocab_size=c.vocab_size,
        gated="gated" in getattr(c, "feed_forward_proj", "relu"),
        # transformers 5 forces T5Config.tie_word_embeddings=True and keeps the file's value in
        # scale_decoder_outputs: false there (T5 v1.1, flan-t5) means a separate lm_head.
        tied_lm_head=bool(getattr(c, "scale_decoder_outputs", getattr(c, "tie_word_embeddings", False))),
    )
