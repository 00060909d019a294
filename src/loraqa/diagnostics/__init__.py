"""Diagnostics: T5 architectures < memory estimate < doctor; synthetic models < bench (speed, MFU, memory)."""
