"""ChatClient against a scripted OpenAI-compatible server: answers, retries, give-ups, secrets."""

import asyncio
import logging

import pytest

from gadms.curation.chat import ChatCall, ChatClient, ChatError

from .chat_server import ChatServer, Reply, completion, error, sequence

MESSAGES = [{"role": "user", "content": "Describe the person."}]
SECRET = "sk-test-7f3a9c1e5b2d4k"


def client_for(server: ChatServer, **kwargs) -> ChatClient:
    """A client with near-zero backoff so retry tests stay fast."""
    kwargs.setdefault("backoff_s", 0.001)
    kwargs.setdefault("max_backoff_s", 0.01)
    kwargs.setdefault("timeout_s", 5.0)
    return ChatClient(server.url, "test-model", **kwargs)


def test_complete_returns_the_answer_and_sends_the_openai_payload():
    with ChatServer(sequence(completion("A man in a red jacket."))) as server:
        with client_for(server) as client:
            answer = client.complete(MESSAGES, max_tokens=40, temperature=0.5, seed=7)
        sent = server.requests
    assert answer == "A man in a red jacket."
    assert len(sent) == 1
    assert sent[0].path == "/v1/chat/completions"
    expected = {"model": "test-model", "messages": MESSAGES, "max_tokens": 40, "temperature": 0.5, "seed": 7}
    assert sent[0].json == expected
    assert "authorization" not in sent[0].headers


def test_seed_is_left_out_when_not_given():
    with ChatServer(sequence(completion("ok"))) as server:
        with client_for(server) as client:
            client.complete(MESSAGES)
        assert "seed" not in server.requests[0].json


def test_429_honours_retry_after_instead_of_the_backoff():
    delays = []
    replies = sequence(error(429, "slow down", headers={"Retry-After": "0"}), completion("ok"))
    with ChatServer(replies) as server:
        with client_for(server, backoff_s=30.0, max_backoff_s=60.0, sleep=delays.append) as client:
            assert client.complete(MESSAGES) == "ok"
        assert len(server.requests) == 2
    assert delays == [0.0]


def test_server_errors_are_retried_until_success():
    with ChatServer(sequence(error(500), error(503), completion("ok"))) as server:
        with client_for(server) as client:
            assert client.complete(MESSAGES) == "ok"
        assert len(server.requests) == 3


def test_a_reply_slower_than_the_timeout_is_retried():
    replies = sequence(Reply(json=completion("late").json, delay_s=3.0), completion("fast"))
    with ChatServer(replies) as server:
        with client_for(server, timeout_s=0.3) as client:
            assert client.complete(MESSAGES) == "fast"
        assert len(server.requests) == 2


@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=b'{"choices": [{"message": '),
        Reply(body=b"<html>gateway</html>"),
        Reply(json={"id": "x", "object": "chat.completion"}),
        Reply(json={"choices": []}),
        Reply(json={"choices": [{"message": {"role": "assistant"}}]}),
        Reply(json={"choices": [{"message": {"content": None}}]}),
    ],
    ids=["truncated-json", "not-json", "no-choices", "empty-choices", "no-content", "null-content"],
)
def test_malformed_answers_are_retried_then_fail_naming_the_attempts(reply):
    with ChatServer(sequence(reply)) as server:
        with client_for(server, max_retries=2) as client:
            with pytest.raises(ChatError) as caught:
                client.complete(MESSAGES)
        assert len(server.requests) == 3
    message = str(caught.value)
    assert "3 attempts" in message and server.url in message
    assert "\n" not in message


def test_malformed_answer_then_success_recovers():
    with ChatServer(sequence(Reply(body=b"{oops"), Reply(json={}), completion("ok"))) as server:
        with client_for(server) as client:
            assert client.complete(MESSAGES) == "ok"


def test_client_error_fails_at_once_with_status_and_body():
    with ChatServer(sequence(error(400, "max_tokens is too large"), completion("never"))) as server:
        with client_for(server) as client:
            with pytest.raises(ChatError) as caught:
                client.complete(MESSAGES)
        assert len(server.requests) == 1
    message = str(caught.value)
    assert "HTTP 400" in message and "max_tokens is too large" in message and server.url in message
    assert "\n" not in message


def test_long_error_bodies_are_cut_to_an_excerpt():
    with ChatServer(sequence(error(422, "x" * 5000))) as server:
        with client_for(server) as client:
            with pytest.raises(ChatError) as caught:
                client.complete(MESSAGES)
    assert len(str(caught.value)) < 400


def test_backoff_doubles_and_is_capped():
    delays = []
    with ChatServer(sequence(error(500))) as server:
        client = client_for(server, max_retries=5, backoff_s=0.01, max_backoff_s=0.05, sleep=delays.append)
        with client, pytest.raises(ChatError, match="6 attempts"):
            client.complete(MESSAGES)
        assert len(server.requests) == 6
    assert delays == pytest.approx([0.01, 0.02, 0.04, 0.05, 0.05])


def test_backoff_really_waits_between_attempts():
    with ChatServer(sequence(error(503), error(503), error(503), completion("ok"))) as server:
        with client_for(server, backoff_s=0.05, max_backoff_s=1.0) as client:
            assert client.complete(MESSAGES) == "ok"
        arrivals = [r.received_at for r in server.requests]
    gaps = [later - earlier for earlier, later in zip(arrivals, arrivals[1:])]
    for gap, planned in zip(gaps, [0.05, 0.10, 0.20]):
        assert gap >= planned * 0.95


def test_unreachable_server_is_retried_then_reported():
    with ChatServer(sequence(completion("ok"))) as server:
        url = server.url
    client = ChatClient(url, "test-model", max_retries=2, backoff_s=0.0, timeout_s=2.0)
    with client, pytest.raises(ChatError, match=r"3 attempts; last error: Connect"):
        client.complete(MESSAGES)


def test_api_key_is_sent_but_never_shown(monkeypatch, caplog):
    monkeypatch.setenv("GADMS_TEST_API_KEY", SECRET)
    caplog.set_level(logging.DEBUG)
    replies = sequence(error(500, "busy"), error(401, f"invalid key {SECRET}"))
    with ChatServer(replies) as server:
        with client_for(server, api_key_env="GADMS_TEST_API_KEY") as client:
            shown = repr(client)
            with pytest.raises(ChatError) as caught:
                client.complete(MESSAGES)
        sent = server.requests
    assert [r.headers["authorization"] for r in sent] == [f"Bearer {SECRET}"] * 2
    assert "HTTP 401" in str(caught.value)
    assert SECRET not in str(caught.value)
    assert SECRET not in shown and "GADMS_TEST_API_KEY" in shown
    assert caplog.records, "expected retry/HTTP log records to inspect"
    assert all(SECRET not in record.getMessage() for record in caplog.records)
    assert SECRET not in caplog.text


def test_unset_key_variable_sends_no_authorization(monkeypatch):
    monkeypatch.delenv("GADMS_TEST_API_KEY", raising=False)
    with ChatServer(sequence(completion("ok"))) as server:
        with client_for(server, api_key_env="GADMS_TEST_API_KEY") as client:
            assert client.complete(MESSAGES) == "ok"
        assert "authorization" not in server.requests[0].headers


@pytest.mark.parametrize("url", ["127.0.0.1:8000/v1", "ftp://host/v1", ""])
def test_a_base_url_without_http_scheme_is_rejected(url):
    with pytest.raises(ValueError, match="base_url"):
        ChatClient(url, "m")


def test_acomplete_retries_like_the_sync_path():
    delays = []

    async def record(seconds):
        delays.append(seconds)

    with ChatServer(sequence(error(429), error(502), completion("ok"))) as server:
        client = client_for(server, backoff_s=0.01, max_backoff_s=1.0, async_sleep=record)
        assert asyncio.run(client.acomplete(MESSAGES, seed=3)) == "ok"
        assert len(server.requests) == 3 and server.requests[-1].json["seed"] == 3
    assert delays == pytest.approx([0.01, 0.02])


def test_acomplete_fails_at_once_on_client_error():
    with ChatServer(sequence(error(404, "model not found"))) as server:
        with pytest.raises(ChatError, match="HTTP 404: .*model not found"):
            asyncio.run(client_for(server).acomplete(MESSAGES))
        assert len(server.requests) == 1


def _echo_seed(request_json, call_index):
    seed = request_json["seed"]
    if seed == 5:
        return error(400, "bad request 5")
    return Reply(json=completion(f"seed {seed}").json, delay_s=0.2)


def test_complete_many_bounds_concurrency_keeps_order_and_isolates_failures():
    calls = [ChatCall(MESSAGES, seed=i) for i in range(12)]
    with ChatServer(_echo_seed) as server:
        answers = client_for(server).complete_many(calls, concurrency=4)
        peak = server.max_in_flight
    assert peak == 4
    assert isinstance(answers[5], ChatError) and "bad request 5" in str(answers[5])
    assert [a for i, a in enumerate(answers) if i != 5] == [f"seed {i}" for i in range(12) if i != 5]


def test_complete_many_works_inside_a_running_event_loop():
    async def from_async_code(client):
        return client.complete_many([ChatCall(MESSAGES, seed=1), ChatCall(MESSAGES, seed=2)], concurrency=2)

    with ChatServer(_echo_seed) as server:
        assert asyncio.run(from_async_code(client_for(server))) == ["seed 1", "seed 2"]


def test_a_password_in_the_endpoint_url_never_reaches_errors_logs_or_repr(caplog):
    with ChatServer(sequence(error(500), error(400, "bad request"))) as server:
        url = server.url.replace("http://", f"http://user:{SECRET}@")
        client = ChatClient(url, "test-model", backoff_s=0.001, max_backoff_s=0.01, timeout_s=5.0)
        with client, caplog.at_level(logging.WARNING), pytest.raises(ChatError) as caught:
            client.complete(MESSAGES)
    shown = [str(caught.value), repr(client), *(r.getMessage() for r in caplog.records)]
    assert len(shown) == 3 and "attempt 1/" in shown[2]  # the retry warning is there, without the password
    assert all(SECRET not in text and "user:[REDACTED]@" in text for text in shown)
    with pytest.raises(ValueError) as bad:
        ChatClient(url, "test-model", timeout_s=0)
    assert SECRET not in str(bad.value)
