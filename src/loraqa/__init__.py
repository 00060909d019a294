"""loraqa: LoRA adapters for encoder-decoder question answering."""

__version__ = "0.1.0"
