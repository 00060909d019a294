"""`auto` routing by sentence embeddings (a vote of each adapter's nearest training questions),
with TF-IDF where no embedder or no stored questions: what a user would see go wrong is a
question asked in other words than the training questions sent to the wrong domain, an adapter
trained before questions were stored dropping out of routing, or a server that embeds every
adapter's questions again at each start."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from helpers import run_cli
from loraqa.domain_profile import DomainProfile
from loraqa.inference.routing import Router, tfidf_route

CLINICAL = [
    "What dose of amoxicillin was given to the patient?",
    "Which symptoms did the infected children show?",
    "How long did the fever last after vaccination?",
    "What was the mortality rate in the ward?",
]
STORIES = [
    "Why did the fox trick the crow?",
    "What did the princess find in the forest?",
    "Who helped the miller's daughter spin the straw?",
    "Where did the giant hide his gold?",
]


def profiles(with_questions: bool = True) -> dict[str, DomainProfile]:
    out = {}
    for name, questions in (("clinical", CLINICAL), ("stories", STORIES)):
        profile = DomainProfile.from_rows([{"question": q, "context": ""} for q in questions], name)
        if not with_questions:
            profile.questions = []
        out[name] = profile
    return out


def test_a_question_in_other_words_goes_to_its_domain(minilm):
    """No word of these questions is in either profile: TF-IDF has nothing to go on, the
    embedding vote sends each to its domain."""
    router = Router(minilm)
    asked = {
        "Which medicine did the doctor prescribe for the infection?": "clinical",
        "What happened to the wolf at the end of the tale?": "stories",
    }
    for question, domain in asked.items():
        name, score = router.route(profiles(), question, None)
        assert name == domain and 0.5 < score <= 1.0
    assert router.method == "embeddings"


def test_profiles_written_before_questions_were_kept_are_routed_by_tfidf(minilm):
    old = profiles(with_questions=False)
    question = "What dose of amoxicillin did the patient get?"
    assert Router(minilm).route(old, question, None) == tfidf_route(old, question, None)
    assert Router("tfidf").method == "tfidf"


def test_the_questions_vectors_are_made_once_and_kept_on_disk(minilm, tmp_path, monkeypatch):
    import shutil

    # a fresh routing cache; the embedder's own export is the session's (made once, ten seconds)
    for made in Path(os.environ["LORAQA_EMBEDDER_CACHE"]).iterdir():
        if made.name != "routing":
            shutil.copytree(made, tmp_path / made.name, symlinks=True)
    monkeypatch.setenv("LORAQA_EMBEDDER_CACHE", str(tmp_path))
    first = Router(minilm)
    first.route(profiles(), "Which medicine was prescribed?", None)
    stored = list((tmp_path / "routing").glob("*.npy"))
    assert len(stored) == 2

    calls = []
    second = Router(minilm)
    embedder = second.embedder()
    original = embedder.embed_queries
    embedder.embed_queries = lambda texts: calls.append(len(texts)) or original(texts)
    assert second.route(profiles(), "Which medicine was prescribed?", None)[0] == "clinical"
    assert calls == [1]  # the question only: the profiles' vectors came from the cache


def test_a_profile_keeps_a_sample_of_its_training_questions_and_reads_back(tmp_path):
    rows = [{"question": f"Question number {i} about the ward?", "context": ""} for i in range(500)]
    profile = DomainProfile.from_rows(rows, "ward")
    assert len(profile.questions) == 300 and set(profile.questions) <= {r["question"] for r in rows}
    (tmp_path / "loraqa_domain.json").write_text(profile.to_json())
    assert DomainProfile.read(tmp_path).questions == profile.questions
    data = json.loads(profile.to_json())
    data["questions"] = [1, 2]
    (tmp_path / "loraqa_domain.json").write_text(json.dumps(data))
    with pytest.raises(Exception, match="damaged"):
        DomainProfile.read(tmp_path)


def test_a_combination_asks_its_parents_questions_by_their_weights():
    both = profiles()
    combined = DomainProfile.combined([(both["clinical"], 0.75), (both["stories"], 0.25)], "mix")
    assert set(combined.questions) <= set(CLINICAL + STORIES)
    assert sum(q in CLINICAL for q in combined.questions) == 4 and sum(q in STORIES for q in combined.questions) == 4
    only = DomainProfile.combined([(both["clinical"], 1.0), (both["stories"], 0.0)], "one")
    assert set(only.questions) == set(CLINICAL)


def test_serve_refuses_a_route_embedder_it_cannot_load_in_one_line(tmp_path):
    res = run_cli("serve", "--route-embedder", str(tmp_path / "missing"), "--port", "1")
    assert res.exit_code != 0
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "missing" in lines[0] and "Traceback" not in res.output
    assert os.path.basename(str(tmp_path / "missing")) in lines[0]
    from loraqa.inference import routing

    assert routing._ROUTER.setting != str(tmp_path / "missing")  # the process still routes as before
