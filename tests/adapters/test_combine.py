"""`loraqa combine`: one adapter out of several, the same weights PEFT's own
add_weighted_adapter makes, usable by every command, refused in one line when it cannot work."""

from __future__ import annotations

import json

import pytest
import torch

from helpers import read_jsonl, run_cli, train_memoriser, write_jsonl


def peft_combination(adapters: list, weights: list[float], method: str, density: float | None = None):
    """What a user writing PEFT by hand gets: the combined adapter's state dict."""
    from peft import PeftModel, get_peft_model_state_dict
    from transformers import AutoModelForSeq2SeqLM

    from loraqa.adapters.folder import resolve_adapter

    refs = [resolve_adapter(a) for a in adapters]
    base = AutoModelForSeq2SeqLM.from_pretrained(refs[0].config.model.name)
    model = PeftModel.from_pretrained(base, str(refs[0].adapter_dir), adapter_name="p0")
    for i, ref in enumerate(refs[1:], 1):
        model.load_adapter(str(ref.adapter_dir), adapter_name=f"p{i}")
    torch.manual_seed(42)
    extra = {"density": density} if density is not None else {}
    model.add_weighted_adapter([f"p{i}" for i in range(len(refs))], weights, "mine", combination_type=method, **extra)
    return get_peft_model_state_dict(model, adapter_name="mine")


@pytest.mark.parametrize(
    "method,density", [("linear", None), ("cat", None), ("svd", None), ("ties", 0.5), ("dare_linear", 0.7)]
)
def test_the_combination_is_peft_s_own(domain_adapters, tmp_path, method, density):
    from safetensors.torch import load_file

    science, places = str(domain_adapters["runs"]["science"]), str(domain_adapters["runs"]["places"])
    out = tmp_path / "combo"
    args = ["combine", science, places, "--weights", "0.6,0.4", "--method", method, "-o", str(out)]
    res = run_cli(*args, *(["--density", str(density)] if density is not None else []))
    assert res.exit_code == 0, res.output
    ours = load_file(str(out / "adapter_model.safetensors"))
    theirs = peft_combination([science, places], [0.6, 0.4], method, density)
    assert set(ours) == set(theirs) and ours
    for key in ours:
        assert torch.allclose(ours[key], theirs[key], atol=1e-6), key
    record = json.loads((out / "loraqa_combination.json").read_text())
    assert record["method"] == method and [p["weight"] for p in record["parents"]] == [0.6, 0.4]
    assert method in (out / "README.md").read_text() and "combine(" in (out / "loraqa_config.yaml").read_text()


def test_a_combination_answers_predicts_merges_and_routes(domain_adapters, tmp_path):
    """Weights 1 and 0 (linear) make exactly the first parent: it answers its memorised questions
    as that parent does, through predict, merge and the server's domain profiles."""
    from loraqa.domain_profile import DomainProfile, shared_query, terms
    from loraqa.inference.answerer import Answerer

    runs, rows = domain_adapters["runs"], domain_adapters["rows"]["science"][:4]
    out = tmp_path / "science-only"
    res = run_cli("combine", str(runs["science"]), str(runs["places"]), "--weights", "1,0", "-o", str(out))
    assert res.exit_code == 0, res.output
    questions = write_jsonl(
        tmp_path / "q.jsonl", [{"id": r["id"], "question": r["question"], "context": r["context"]} for r in rows]
    )
    res = run_cli("predict", "-a", str(out), "--input", str(questions), "--output", str(tmp_path / "a.jsonl"))
    assert res.exit_code == 0, res.output
    assert [a["answer"] for a in read_jsonl(tmp_path / "a.jsonl")] == [r["answers"]["text"][0] for r in rows]
    merged = run_cli("merge", str(out), "-o", str(tmp_path / "merged"))
    assert merged.exit_code == 0, merged.output
    # the profile of an equal combination sits between its parents' for each domain's questions,
    # scored as `auto` scores them (one query vector for all profiles)
    run_cli("combine", str(runs["science"]), str(runs["places"]), "-o", str(tmp_path / "both"))
    answerer = Answerer({"both": str(tmp_path / "both")}, dtype="fp32")
    profile = DomainProfile.read(tmp_path / "both")
    parents = {n: DomainProfile.read(runs[n] / "adapter") for n in ("science", "places")}
    assert profile.train_questions == sum(p.train_questions for p in parents.values())
    for name, domain_rows in domain_adapters["rows"].items():
        q = terms(domain_rows[0]["question"] + " " + domain_rows[0]["context"])
        other = "places" if name == "science" else "science"
        query = shared_query([profile, *parents.values()], q)
        assert parents[other].cosine(query) < profile.cosine(query) < parents[name].cosine(query)
    loaded = answerer.registry.get("both")
    assert loaded.profile is not None and loaded.describe().startswith(f"trained on {profile.train_questions}")
    chosen, _ = answerer.registry.choose("auto", rows[0]["question"], rows[0]["context"])
    assert chosen == "both"  # auto routing sees it


def test_what_cannot_be_combined_is_refused_in_one_line(
    domain_adapters, question_writer, nodrop_model_dir, tiny_model_dir, squad_rows, tmp_path
):
    science = str(domain_adapters["runs"]["science"])
    for name in ("r8", "qkv", "tiny"):
        (tmp_path / name).mkdir()
    rank8 = train_memoriser(nodrop_model_dir, squad_rows[:4], tmp_path / "r8", steps=2, sets=("lora.r=8",)).run_dir
    qkv = train_memoriser(
        nodrop_model_dir, squad_rows[:4], tmp_path / "qkv", steps=2, sets=("lora.target_modules=[q,k,v]",)
    ).run_dir
    other_base = train_memoriser(tiny_model_dir, squad_rows[:4], tmp_path / "tiny", steps=2).run_dir
    out = tmp_path / "out"
    cases = [
        ([science, str(rank8)], "needs one rank"),
        ([science, str(rank8), "--method", "cat"], None),  # cat adds ranks: allowed
        ([science, str(qkv), "--method", "svd"], "different layers"),
        ([science, str(other_base)], "different base models"),
        ([science, str(question_writer["run"])], "different prompt templates"),
        ([science, science, "--weights", "1,2,3"], "3 weights for 2 adapters"),
        ([science, science, "--weights", "1,x"], "--weights takes numbers"),
        ([science, science, "--method", "average"], "unknown combination method"),
        ([science, science, "--method", "linear", "--density", "0.5"], "does not use it"),
        ([science, science, "--method", "ties", "--density", "1.5"], "--density"),
        ([science], "two adapters or more"),
        ([science, str(tmp_path / "missing")], "missing"),
    ]
    for args, says in cases:
        res = run_cli("combine", *args, "-o", str(out), "--overwrite")
        if says is None:
            assert res.exit_code == 0, res.output
            assert json.loads((out / "adapter_config.json").read_text())["r"] == 16 + 8
            continue
        assert res.exit_code != 0 and says in res.stderr and "Traceback" not in res.output, (args, res.output)
        assert len(res.stderr.strip().splitlines()) == 1


def test_auto_sends_each_domain_to_its_own_adapter_with_a_combination_beside_them():
    """Three domains written from templates that share most of their words (as real domains share
    a language), and the combination of all three served beside them: `auto` must still send each
    domain's questions to its own adapter. Scored with each profile's own IDF, the combination's
    broader profile won two domains' questions outright (its parents are more exact there)."""
    import random

    from loraqa.domain_profile import DomainProfile
    from loraqa.inference.routing import route

    rng = random.Random(0)

    def rows(question, passage, fills, n):
        names = [
            "".join(rng.choice("bcdfgklmnprstvz") + rng.choice("aeiou") for _ in range(3)).title() for _ in range(n)
        ]
        return [
            {"question": question.format(name=m), "context": passage.format(name=m, x=rng.choice(fills))} for m in names
        ]

    templates = {
        "people": (
            "Where was {name} born?",
            "{name} was born in {x} and grew up in the north of the country.",
            ["Elst", "Tarn", "Lorn", "Vede"],
        ),
        "pets": (
            "What is the name of the pet of {name}?",
            "{name} keeps a dog called {x}; the dog is old now and lives in the house of the family.",
            ["Rex", "Bo", "Tip"],
        ),
        "purchases": (
            "What did {name} buy?",
            "Last spring {name} bought a {x} at the market of the town.",
            ["coat", "lamp", "clock"],
        ),
    }
    parents = {d: DomainProfile.from_rows(rows(*t, 200)) for d, t in templates.items()}
    combined = DomainProfile.combined([(p, 1 / 3) for p in parents.values()], "all three")
    for domain, t in templates.items():
        for r in rows(*t, 20):
            assert route({**parents, "all": combined}, r["question"], r["context"])[0] == domain
            assert route({**parents, "all": combined}, r["question"], None)[0] == domain
            assert (
                route(
                    {"all": combined, "other": parents["pets" if domain != "pets" else "people"]},
                    r["question"],
                    r["context"],
                )[0]
                == "all"
            )  # where no parent is served it is chosen


def test_a_damaged_parent_is_refused_in_one_line_and_nothing_is_written(domain_adapters, tmp_path):
    """A parent that diverged (NaN weights), one with no LoRA tensors, a damaged weights file and
    configs of the wrong types: each one line, and no adapter written (an all-NaN combination
    used to be written with exit 0)."""
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    science = domain_adapters["runs"]["science"]

    def parent(name, weights=None, config=None, raw=None):
        folder = tmp_path / name
        shutil.copytree(science / "adapter", folder)
        if weights is not None:
            save_file(weights(load_file(folder / "adapter_model.safetensors")), folder / "adapter_model.safetensors")
        if raw is not None:
            (folder / "adapter_model.safetensors").write_bytes(raw)
        if config is not None:
            cfg = json.loads((folder / "adapter_config.json").read_text())
            (folder / "adapter_config.json").write_text(json.dumps({**cfg, **config}))
        return str(folder)

    cases = [
        (
            parent("nan", weights=lambda t: {k: torch.full_like(v, float("nan")) for k, v in t.items()}),
            "NaN or infinite weights",
        ),
        (parent("nolora", weights=lambda t: {"base.weight": torch.zeros(2)}), "holds no LoRA weights"),
        (parent("corrupt", raw=b"\x08\x00\x00\x00\x00\x00\x00\x00{bad json"), "not a readable safetensors file"),
        (parent("rank", config={"r": "abc"}), "not a rank"),
        (parent("pattern", config={"rank_pattern": [1, 2]}), "rank_pattern"),
        (parent("targets", config={"target_modules": 5}), "target_modules that are not layer names"),
    ]
    out = tmp_path / "out"
    for bad, says in cases:
        res = run_cli("combine", str(science), bad, "-o", str(out))
        assert res.exit_code != 0 and says in res.stderr and "Traceback" not in res.output, (bad, res.output)
        assert len(res.stderr.strip().splitlines()) == 1 and not out.exists()
