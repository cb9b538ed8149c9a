"""The server through the clients people use: `openai` (sync and async, streaming and not) and
LangChain's ChatOpenAI; several streams at once."""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
from collections.abc import Iterator

import httpx
import numpy as np
import openai
import pytest
from langchain_openai import ChatOpenAI
from pydantic import BaseModel

from tests.server.conftest import MODEL, Server, serve

QUESTIONS = ["What is the capital of France?", "Name three colors.", "Count from 1 to 5.", "Who wrote Hamlet?"]
UI = "https://ui.example"  # the one origin allowed to call from a browser
SHORT = 12  # tokens per answer: the tests check shapes and behaviour, not prose
# nats. Measured here: 4 of 24 greedy answers parted between a run alone and four at once, each time
# at one token whose two likeliest candidates were 0.004-0.084 apart; alone runs themselves part
# that way between cache states (a prompt read whole or from the cache runs other kernels).
NEAR_TIE = 0.2
LONG = "Count from 1 to 30, one number per line."  # needs more than SHORT tokens


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serve(tmp_path_factory.mktemp("serve"), "--ctx", "1024", "--parallel", "4", "--cors", UI) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server: Server) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0, timeout=300)


def ask(question: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}]


def test_models_lists_the_served_model(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == [MODEL]


def test_cors_only_for_the_allowed_origin(server: Server) -> None:
    def preflight(origin: str) -> httpx.Response:
        return httpx.options(server.url + "/chat/completions", headers={
            "Origin": origin, "Access-Control-Request-Method": "POST",
            "Access-Control-Request-Headers": "authorization,content-type"})  # fmt: skip

    assert preflight(UI).headers.get("access-control-allow-origin") == UI
    assert "access-control-allow-origin" not in preflight("https://evil.example").headers


def test_chat_completion(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ask(QUESTIONS[0]), max_tokens=SHORT, temperature=0)
    choice = reply.choices[0]
    assert reply.object == "chat.completion" and choice.message.role == "assistant"
    assert choice.message.content and choice.finish_reason in ("stop", "length")
    assert reply.usage.completion_tokens <= SHORT and reply.usage.prompt_tokens > 5
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_stream_with_usage(client: openai.OpenAI) -> None:
    chunks = list(client.chat.completions.create(
        model=MODEL, messages=ask(LONG), max_tokens=SHORT, temperature=0, stream=True,
        stream_options={"include_usage": True}))  # fmt: skip
    assert len({c.id for c in chunks}) == 1 and len({c.created for c in chunks}) == 1
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-2].choices[0].finish_reason == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == SHORT
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks[:-1])
    whole = client.chat.completions.create(model=MODEL, messages=ask(LONG), max_tokens=SHORT, temperature=0)
    assert streamed == whole.choices[0].message.content  # greedy: the same answer either way
    assert whole.usage.prompt_tokens_details.cached_tokens == whole.usage.prompt_tokens - 1  # KV reused


def test_async_client_streams(server: Server) -> None:
    async def main() -> tuple[str, str]:
        aclient = openai.AsyncOpenAI(base_url=server.url, api_key="unused", max_retries=0)
        stream = await aclient.chat.completions.create(model=MODEL, messages=ask(QUESTIONS[2]), max_tokens=SHORT,
                                                       temperature=0, stream=True)  # fmt: skip
        pieces = [c.choices[0].delta.content or "" async for c in stream if c.choices]
        whole = await aclient.chat.completions.create(model=MODEL, messages=ask(QUESTIONS[2]), max_tokens=SHORT,
                                                      temperature=0)  # fmt: skip
        await aclient.close()
        return "".join(pieces), whole.choices[0].message.content

    streamed, whole = asyncio.run(main())
    assert streamed and streamed == whole


def test_stop_sequence_and_seed(client: openai.OpenAI) -> None:
    full = client.chat.completions.create(model=MODEL, messages=ask(QUESTIONS[2]), max_tokens=30, temperature=0)
    text = full.choices[0].message.content
    assert "3" in text
    cut = client.chat.completions.create(model=MODEL, messages=ask(QUESTIONS[2]), max_tokens=30, temperature=0,
                                         stop=["3"])  # fmt: skip
    assert cut.choices[0].message.content == text[: text.index("3")] and cut.choices[0].finish_reason == "stop"
    sampled = [client.chat.completions.create(model=MODEL, messages=ask(QUESTIONS[3]), max_tokens=SHORT,
                                              temperature=1.0, seed=7).choices[0].message.content for _ in range(2)]
    assert sampled[0] == sampled[1]  # fmt: skip


def test_logprobs(client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model=MODEL, messages=ask(QUESTIONS[0]), max_tokens=4, temperature=0,
                                           logprobs=True, top_logprobs=3)  # fmt: skip
    entries = reply.choices[0].logprobs.content
    assert len(entries) == reply.usage.completion_tokens
    for e in entries:  # greedy: the chosen token is the likeliest one
        assert len(e.top_logprobs) == 3 and e.top_logprobs[0].token == e.token
        assert e.logprob <= 0 and e.top_logprobs[0].logprob >= e.top_logprobs[1].logprob >= e.top_logprobs[2].logprob
    assert "".join(e.token for e in entries) == reply.choices[0].message.content
    chunks = [c for c in client.chat.completions.create(
        model=MODEL, messages=ask(QUESTIONS[0]), max_tokens=12, temperature=0, logprobs=True, top_logprobs=3,
        stream=True, stream_options={"include_usage": True})]  # fmt: skip
    streamed = [e for c in chunks if c.choices and c.choices[0].logprobs for e in c.choices[0].logprobs.content]
    # tokens that come together go out in one chunk: every token's entry is still there, in order
    assert len(streamed) == chunks[-1].usage.completion_tokens
    assert "".join(e.token for e in streamed) == "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_json_schema_output_validates(client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
              "required": ["city", "population"], "additionalProperties": False}  # fmt: skip

    class City(BaseModel):
        city: str
        population: int

    reply = client.chat.completions.create(
        model=MODEL, messages=ask("Describe Paris as JSON."), max_tokens=60, temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "city", "schema": schema, "strict": True}})
    City.model_validate_json(reply.choices[0].message.content)


def test_text_completion_and_embeddings(client: openai.OpenAI) -> None:
    done = client.completions.create(model=MODEL, prompt="The capital of France is", max_tokens=5, temperature=0)
    assert done.object == "text_completion" and done.choices[0].text and done.usage.completion_tokens <= 5
    emb = client.embeddings.create(model=MODEL, input=["a cat", "a cat", "stock market crash"])
    vectors = np.array([e.embedding for e in emb.data])
    assert vectors.shape[0] == 3 and np.allclose(np.linalg.norm(vectors, axis=1), 1, atol=1e-4)
    assert np.allclose(vectors[0], vectors[1], atol=1e-5)  # the same text, the same vector
    assert vectors[0] @ vectors[1] > vectors[0] @ vectors[2]
    raw = client.embeddings.with_raw_response.create(model=MODEL, input="a cat", encoding_format="float").parse()
    assert np.allclose(raw.data[0].embedding, vectors[0], atol=1e-5)
    b64 = httpx.post(f"{client.base_url}embeddings", timeout=60,
                     json={"model": MODEL, "input": "a cat", "encoding_format": "base64"}).json()  # fmt: skip
    decoded = np.frombuffer(base64.b64decode(b64["data"][0]["embedding"]), dtype="<f4")
    assert np.allclose(decoded, vectors[0], atol=1e-5)


def test_four_streams_at_once_match_greedy_answers_alone(client: openai.OpenAI) -> None:
    """Each question alone, then all four at once: every stream finishes, and each concurrent
    answer equals its answer alone, or parts from it only where the alone run's two likeliest
    tokens were within llama.cpp's batched-vs-single rounding (a near tie: another matmul
    kernel runs for a batch of 4 than for 1)."""

    def run(question: str) -> tuple[str, list]:
        stream = client.chat.completions.create(model=MODEL, messages=ask(question), max_tokens=24, temperature=0,
                                                stream=True, logprobs=True, top_logprobs=2)  # fmt: skip
        tokens = []
        for chunk in stream:
            if chunk.choices and chunk.choices[0].logprobs:
                tokens += chunk.choices[0].logprobs.content
        return "".join(t.token for t in tokens), tokens

    alone = [run(q) for q in QUESTIONS]
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, QUESTIONS))
    for (text_a, toks_a), (text_b, toks_b) in zip(alone, together, strict=True):
        assert toks_b, "a concurrent stream produced nothing"
        if text_a == text_b:
            continue
        k = next((i for i, (a, b) in enumerate(zip(toks_a, toks_b, strict=False)) if a.token != b.token),
                 min(len(toks_a), len(toks_b)))  # or where one ended (end of turn) and the other went on
        for toks in (toks_a, toks_b):  # at the parting token each run had a near tie
            if k < len(toks):
                top = toks[k].top_logprobs
                assert top[0].logprob - top[1].logprob < NEAR_TIE, (text_a, text_b)
        for a, b in zip(toks_a[:k], toks_b[:k], strict=True):  # and before it, the numbers agree as closely
            assert abs(a.logprob - b.logprob) < NEAR_TIE, (text_a, text_b)


class Answer(BaseModel):
    country: str
    capital: str


def test_langchain_invoke_stream_and_structured_output(server: Server) -> None:
    llm = ChatOpenAI(base_url=server.url, api_key="unused", model=MODEL, temperature=0, max_tokens=SHORT,
                     max_retries=0, stream_usage=True)  # fmt: skip
    reply = llm.invoke("What is the capital of France?")
    assert reply.content and reply.usage_metadata["output_tokens"] <= SHORT
    chunks = list(llm.stream("What is the capital of France?"))
    assert "".join(c.content for c in chunks) == reply.content
    usage = [c.usage_metadata for c in chunks if c.usage_metadata]
    assert usage and usage[-1]["output_tokens"] == reply.usage_metadata["output_tokens"]
    structured = ChatOpenAI(base_url=server.url, api_key="unused", model=MODEL, temperature=0, max_tokens=60,
                            max_retries=0).with_structured_output(Answer)  # fmt: skip
    result = structured.invoke("France: give its country name and capital city.")
    assert isinstance(result, Answer) and result.country and result.capital
