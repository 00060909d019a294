"""Configuration: presets, overrides, type checking and the errors a user sees."""

from __future__ import annotations

import pytest

from loraqa.config import all_keys, load_config, preset_names
from loraqa.errors import ConfigError, LoraqaError

CONTRACT_KEYS = """model.name model.dtype lora.r lora.alpha lora.dropout lora.target_modules data.source
data.num_samples data.test_size data.seed data.template data.max_source_length data.max_target_length
train.batch_size train.grad_accum train.learning_rate train.epochs train.max_steps train.eval_steps
train.save_steps train.logging_steps train.gradient_checkpointing train.seed eval.max_new_tokens
eval.batch_size track.report_to track.project track.run_name""".split()


def test_public_keys_exist():
    # Renaming any of these breaks users' configs and scripts.
    assert set(CONTRACT_KEYS) <= set(all_keys())


@pytest.mark.parametrize("name", preset_names())
def test_every_preset_loads_and_validates(name):
    cfg = load_config(name)
    assert cfg.preset == name
    assert cfg.train.batch_size >= 1 and cfg.lora.target_modules


def test_required_presets_are_shipped():
    assert {"default", "seed", "base", "gtx1650"} <= set(preset_names())


def test_seed_preset_matches_the_seed_experiment():
    c = load_config("seed")
    assert c.model.name == "google/flan-t5-small" and c.model.dtype == "fp32"
    assert (c.lora.r, c.lora.alpha, c.lora.dropout, c.lora.target_modules) == (8, 16, 0.05, ["q", "v"])
    assert (c.data.source, c.data.num_samples, c.data.test_size, c.data.seed) == ("squad", 5000, 0.2, 42)
    assert c.data.template == "seed" and c.data.max_source_length == 64
    assert (c.train.batch_size, c.train.grad_accum, c.train.learning_rate, c.train.epochs) == (1, 2, 5e-5, 5)
    assert (c.train.eval_steps, c.train.save_steps, c.train.logging_steps) == (500, 500, 50)
    # the seed's checkpointing changes no result; the preset leaves it off (faster, fits easily)
    assert c.train.gradient_checkpointing is False
    assert (c.track.report_to, c.track.project, c.track.run_name) == (
        "wandb",
        "plain-text-lora",
        "flan-t5-small-lora-5000",
    )


def test_default_preset_reads_the_passage_and_uses_a_lora_learning_rate():
    c = load_config("default")
    assert "{context}" in __import__("loraqa.config.templates", fromlist=["x"]).resolve_template(c.data.template)
    assert c.data.max_source_length >= 256
    assert c.train.learning_rate >= 1e-4 and c.model.dtype == "auto"


def test_presets_for_small_cards_avoid_bf16_or_fit():
    assert load_config("gtx1650").model.dtype == "fp32"
    assert load_config("base").model.name == "google/flan-t5-base"


def test_set_overrides_are_parsed_as_yaml_and_typed():
    c = load_config(
        "default",
        sets=[
            "lora.target_modules=[q,k,v]",
            "train.learning_rate=1e-4",
            "train.batch_size=4",
            "data.num_samples=null",
            "train.gradient_checkpointing=true",
        ],
    )
    assert c.lora.target_modules == ["q", "k", "v"]
    assert c.train.learning_rate == 1e-4 and c.train.batch_size == 4
    assert c.data.num_samples is None and c.train.gradient_checkpointing is True


def test_config_file_applies_over_preset_and_set_over_file(tmp_path):
    f = tmp_path / "mine.yaml"
    f.write_text("train:\n  batch_size: 3\n  epochs: 7\nlora:\n  r: 4\n")
    c = load_config("default", config_file=f, sets=["train.batch_size=5"])
    assert (c.train.batch_size, c.train.epochs, c.lora.r) == (5, 7.0, 4)


def test_unknown_key_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown key 'train.learning_rat'.*did you mean 'learning_rate'"):
        load_config("default", sets=["train.learning_rat=1e-4"])


def test_unknown_section_suggests_the_right_one():
    with pytest.raises(ConfigError, match=r"unknown section 'trian'.*did you mean 'train'"):
        load_config("default", sets=["trian.batch_size=4"])


def test_wrong_type_is_named():
    with pytest.raises(ConfigError, match=r"train.batch_size must be an integer, got 'big'"):
        load_config("default", sets=["train.batch_size=big"])


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config("default", sets=["train.batch_size=0", "lora.r=0", "data.test_size=1.5", "model.dtype=fp8"])
    text = str(info.value)
    for part in (
        "train.batch_size must be >= 1",
        "lora.r must be >= 1",
        "data.test_size must be between 0 and 1",
        "model.dtype must be one of auto, fp32, bf16, fp16",
    ):
        assert part in text
    assert len(info.value.problems) == 4


def test_unknown_preset_lists_the_presets():
    with pytest.raises(LoraqaError, match=r"unknown preset 'defualt' \(did you mean 'default'\?\).*seed"):
        load_config("defualt")


def test_bad_template_is_explained():
    with pytest.raises(ConfigError, match=r"neither a template name"):
        load_config("default", sets=["data.template='Answer: {context}'"])


def test_malformed_set_is_explained():
    with pytest.raises(ConfigError, match=r"must look like section.key=value"):
        load_config("default", sets=["batch_size=4"])


def test_bad_config_file_yaml_names_the_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("train:\n  batch_size: [1, 2\n")
    with pytest.raises(LoraqaError, match=r"not valid YAML at line"):
        load_config("default", config_file=f)


def test_unknown_scheduler_is_caught_before_training():
    with pytest.raises(ConfigError, match=r"train.lr_scheduler 'cosin'.*did you mean 'cosine'"):
        load_config("default", sets=["train.lr_scheduler=cosin"])


def test_default_preset_takes_fp32_cpu_steps_in_smaller_micro_batches(tmp_path):
    """In fp32 on a CPU (AVX2-only machines) the default preset's 16 examples per step come as
    4 x 4, keeping peak memory under 2.5 GiB; bf16 and GPUs keep 8 x 2. The update is the same."""
    from loraqa.training.trainer import training_arguments

    cfg = load_config("default")
    cases = {("fp32", "cpu"): (4, 4), ("bf16", "cpu"): (8, 2), ("fp32", "cuda"): (8, 2)}
    for (dtype, device), expected in cases.items():
        args = training_arguments(cfg, tmp_path, dtype, device, [], has_eval=False)
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == expected, (dtype, device)
    seed = load_config("seed")  # not set: the seed preset trains exactly as written
    args = training_arguments(seed, tmp_path, "fp32", "cpu", [], has_eval=False)
    assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
        seed.train.batch_size,
        seed.train.grad_accum,
    )


def test_a_micro_batch_that_does_not_split_the_step_leaves_the_batch_as_given(tmp_path):
    from loraqa.training.trainer import training_arguments

    for sets in (["train.fp32_cpu_micro_batch=3"], ["train.fp32_cpu_micro_batch=16"], ["train.batch_size=5"]):
        cfg = load_config("default", sets=sets)
        args = training_arguments(cfg, tmp_path, "fp32", "cpu", [], has_eval=False)
        assert (args.per_device_train_batch_size, args.gradient_accumulation_steps) == (
            cfg.train.batch_size,
            cfg.train.grad_accum,
        )
    with pytest.raises(ConfigError, match=r"train.fp32_cpu_micro_batch must be >= 1"):
        load_config("default", sets=["train.fp32_cpu_micro_batch=0"])
