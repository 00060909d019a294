"""The OpenAI-compatible routes, driven by the official `openai` client against a live server:
what an agent framework (LangChain's ChatOpenAI, LlamaIndex, smolagents) sends and expects."""

from __future__ import annotations

import httpx
import openai
import pytest

from helpers import live_server

KEY = "s3cret"


@pytest.fixture(scope="module")
def server(domain_answerer):
    from loraqa.serving.app import create_app
    from loraqa.serving.limits import ServerLimits
    from loraqa.serving.options import ServeOptions

    with live_server(
        create_app(domain_answerer, ServeOptions(api_key=KEY, limits=ServerLimits(max_context_chars=5_000)))
    ) as url:
        yield url


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key=KEY, max_retries=0)


def native(server, question, context, adapter):
    """What loraqa's own route answers for the same question, passage and adapter."""
    res = httpx.post(
        f"{server}/v1/answer",
        json={"question": question, "context": context, "adapter": adapter},
        headers={"Authorization": f"Bearer {KEY}"},
        timeout=60,
    )
    assert res.status_code == 200, res.text
    return res.json()


def test_models_list_the_adapters_base_and_auto(client):
    ids = [m.id for m in client.models.list()]
    assert ids == ["science", "places", "base", "auto"]


def test_chat_answers_like_the_native_route_with_usage_and_evidence(client, server, domain_adapters):
    row = domain_adapters["rows"]["science"][0]
    resp = client.chat.completions.create(
        model="science",
        messages=[{"role": "system", "content": row["context"]}, {"role": "user", "content": row["question"]}],
    )
    want = native(server, row["question"], row["context"], "science")
    answer = resp.choices[0].message.content
    assert answer == want["answer"] == row["answers"]["text"][0]
    assert resp.choices[0].finish_reason == "stop" and resp.model == "science"
    assert resp.usage.prompt_tokens > 10 and resp.usage.completion_tokens >= 1
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
    evidence = resp.model_extra["loraqa"]
    assert evidence["adapter"] == "science" and evidence["no_answer"] is False
    assert row["context"][evidence["start"] : evidence["end"]] == answer
    assert evidence["score"] == pytest.approx(want["score"], abs=1e-4)


def test_streaming_reassembles_to_the_same_answer(client, domain_adapters):
    row = domain_adapters["rows"]["places"][0]
    messages = [{"role": "system", "content": row["context"]}, {"role": "user", "content": row["question"]}]
    whole = client.chat.completions.create(model="places", messages=messages).choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="places", messages=messages, stream=True, stream_options={"include_usage": True}
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole == row["answers"]["text"][0]
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens >= 1


def test_completions_take_the_prompt_as_question_and_context_from_the_body(client, domain_adapters):
    row = domain_adapters["rows"]["science"][1]
    resp = client.completions.create(model="science", prompt=row["question"], extra_body={"context": row["context"]})
    assert resp.choices[0].text == row["answers"]["text"][0]
    assert resp.model_extra["loraqa"]["adapter"] == "science"


def test_the_body_context_takes_precedence_over_system_messages(client, domain_adapters):
    row = domain_adapters["rows"]["science"][0]
    resp = client.chat.completions.create(
        model="science",
        extra_body={"context": row["context"]},
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": row["question"]},
        ],
    )
    assert resp.choices[0].message.content == row["answers"]["text"][0]


def test_auto_routes_to_the_adapter_of_the_domain(client, domain_adapters):
    for domain in ("science", "places"):
        row = domain_adapters["rows"][domain][0]
        resp = client.chat.completions.create(
            model="auto",
            messages=[{"role": "system", "content": row["context"]}, {"role": "user", "content": row["question"]}],
        )
        assert resp.model == domain and resp.model_extra["loraqa"]["adapter"] == domain
        assert 0 < resp.model_extra["loraqa"]["route_score"] <= 1
        assert resp.choices[0].message.content == row["answers"]["text"][0]


def test_max_tokens_caps_the_answer(client, domain_adapters):
    row = next(r for r in domain_adapters["rows"]["science"] if len(r["answers"]["text"][0].split()) > 1)
    messages = [{"role": "system", "content": row["context"]}, {"role": "user", "content": row["question"]}]
    full = client.chat.completions.create(model="science", messages=messages)
    capped = client.chat.completions.create(model="science", messages=messages, max_tokens=1)
    assert capped.usage.completion_tokens == 1 < full.usage.completion_tokens
    assert capped.choices[0].finish_reason == "length"
    assert full.choices[0].message.content.startswith(capped.choices[0].message.content)


def test_sampling_parameters_are_accepted_and_change_nothing(client, domain_adapters):
    row = domain_adapters["rows"]["places"][1]
    messages = [{"role": "system", "content": row["context"]}, {"role": "user", "content": row["question"]}]
    plain = client.chat.completions.create(model="places", messages=messages)
    warm = client.chat.completions.create(model="places", messages=messages, temperature=1.3, top_p=0.5, seed=7)
    assert warm.choices[0].message.content == plain.choices[0].message.content


def test_a_wrong_key_is_an_authentication_error(server):
    bad = openai.OpenAI(base_url=f"{server}/v1", api_key="nope", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.status_code == 401 and "API key" in info.value.message


def test_an_unknown_model_is_not_found(client):
    with pytest.raises(openai.NotFoundError) as info:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "Q?"}])
    # the client learns where to look, not what the server holds (scopes: the same answer for out of scope)
    assert info.value.code == "model_not_found" and "GET /v1/models" in info.value.message
    assert "science" not in info.value.message


@pytest.mark.parametrize(
    "extra,param",
    [
        ({"n": 2}, "n"),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]}, "tools"),
        ({"logprobs": True}, "logprobs"),
        ({"stop": ["."]}, "stop"),
        ({"presence_penalty": 0.5}, "presence_penalty"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_parameters_that_cannot_be_honoured_are_refused(client, extra, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="science", messages=[{"role": "user", "content": "Q?"}], **extra)
    assert info.value.param == param and param in info.value.message


def test_a_chat_without_a_user_message_is_a_bad_request(client):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model="science", messages=[{"role": "system", "content": "text"}])
    assert "user message" in info.value.message


def test_a_document_over_the_limit_is_refused_with_413(client):
    with pytest.raises(openai.APIStatusError) as info:
        client.chat.completions.create(
            model="science", messages=[{"role": "system", "content": "x " * 3_000}, {"role": "user", "content": "Q?"}]
        )
    assert info.value.status_code == 413 and info.value.code == "context_length_exceeded"
