"""The model: precision and device < loading the tokenizer and base model < LoRA; fused kernels and attention for training."""
