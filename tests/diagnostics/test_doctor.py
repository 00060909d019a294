"""`loraqa doctor` and the memory estimate behind it."""

from __future__ import annotations

from helpers import run_cli
from loraqa.diagnostics.architectures import KNOWN_ARCHITECTURES, arch_from_config


def test_parameter_count_matches_the_real_architectures():
    from loraqa.diagnostics.synthetic import build_t5

    assert KNOWN_ARCHITECTURES["google/flan-t5-small"].parameters() == 76_961_152
    assert KNOWN_ARCHITECTURES["google/flan-t5-base"].parameters() == 247_577_856
    model = build_t5("tiny", vocab_size=300)
    assert arch_from_config(model.config).parameters() == sum(p.numel() for p in model.parameters())


def test_doctor_reports_the_machine_and_the_cpu_fallback():
    res = run_cli("doctor", "--preset", "seed")
    assert res.exit_code == 0, res.output
    assert "torch" in res.output and "bf16 on CPU" in res.output
    assert "fall back to the CPU" in res.output  # this machine has no GPU
    assert "preset 'seed'" in res.output and "fits" in res.output


def test_doctor_sizes_a_preset_for_a_4gb_card():
    res = run_cli("doctor", "--preset", "base", "--gpu-memory", "4")
    assert res.exit_code == 0 and "(4 GiB card) - fits" in res.output


def test_doctor_advises_when_a_preset_does_not_fit():
    res = run_cli("doctor", "--preset", "default", "--gpu-memory", "1")
    assert "does not fit" in res.output and "gradient_checkpointing=true" in res.output
