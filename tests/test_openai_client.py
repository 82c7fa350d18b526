"""The official `openai` Python client against `offramp serve`: plain and streamed completions,
the model list, usage counts and error shapes."""

import openai
import pytest

from helpers import Server, run_cli

KEY = "openai-client-key-0123456789"


@pytest.fixture(scope="module")
def served(fast_model, tmp_path_factory):
    keys = tmp_path_factory.mktemp("keys") / "keys.txt"
    keys.write_text(run_cli("hash-key", KEY).stdout)
    s = Server(fast_model, "--api-keys", str(keys))
    yield s
    s.stop()


def client(server, key=KEY):
    return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0)


def test_plain_completion_with_usage(served):
    r = client(served).chat.completions.create(
        model="any", messages=[{"role": "user", "content": "thank you so much!"}]
    )
    assert r.choices[0].message.content == "GRATITUDE" and r.choices[0].finish_reason == "stop"
    assert r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens


def test_streamed_completion_carries_the_label(served):
    stream = client(served).chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": "how do I change my card pin"}],
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "SUPPORT"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_models_list_and_error_shapes(served):
    ids = [m.id for m in client(served).models.list()]
    assert len(ids) == 1 and ids[0].startswith("offramp:")
    with pytest.raises(openai.AuthenticationError) as e:
        client(served, key="wrong-key-0123456789abc").models.list()
    assert e.value.status_code == 401 and "API key" in str(e.value)
    with pytest.raises(openai.UnprocessableEntityError, match="no 'user' message"):  # reported, not an empty answer
        client(served).chat.completions.create(model="any", messages=[{"role": "system", "content": "no user"}])
