"""VlmCaptioner against a scripted vision endpoint: request format, concurrency, failures, cleaning."""

import base64

import pytest

from gadms.config import CaptioningConfig
from gadms.curation.chat import ChatClient
from gadms.curation.records import CaptionRequest, Template
from gadms.curation.vlm import VlmCaptioner, build_prompt, clean_caption, truncate_words

from .chat_server import ChatServer, Reply, completion, error

TEMPLATES = (
    Template(1, "A [man] wearing a [colored top] and [colored bottom]."),
    Template(2, "The [person] has [hair] and carries a [colored bag]."),
)
JPEG_PREFIX = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00"


def fake_jpeg(key: str) -> bytes:
    """Bytes that start like a JPEG and carry the key (so the server can tell crops apart)."""
    return JPEG_PREFIX + key.encode() + bytes(range(256))


def key_of(request_json: dict) -> str:
    """Recover the crop key from the image data URL a request carries."""
    url = image_url(request_json)
    data = base64.b64decode(url.split(",", 1)[1])
    return data[len(JPEG_PREFIX) : -256].decode()


def image_url(request_json: dict) -> str:
    parts = request_json["messages"][0]["content"]
    return next(p["image_url"]["url"] for p in parts if p["type"] == "image_url")


def prompt_of(request_json: dict) -> str:
    parts = request_json["messages"][0]["content"]
    return next(p["text"] for p in parts if p["type"] == "text")


def make_requests(n: int, templates=TEMPLATES) -> list[CaptionRequest]:
    return [CaptionRequest(f"crop{i:03d}", fake_jpeg(f"crop{i:03d}"), templates, seed=100 * i) for i in range(n)]


def config(server: ChatServer, **kwargs) -> CaptioningConfig:
    values = dict(vlm_url=server.url, vlm_model="vl-test", max_retries=1, backoff_s=0.0, timeout_s=5.0, max_words=20)
    values.update(kwargs)
    return CaptioningConfig(backend="vlm", **values)


def describe(request_json: dict, call_index: int) -> Reply:
    """A deterministic model: the answer depends only on the crop and the seed."""
    return completion(f"A person {key_of(request_json)} in a red coat, seed {request_json['seed']}.")


def test_the_image_travels_as_an_exact_jpeg_data_url():
    request = make_requests(1, TEMPLATES[:1])[0]
    with ChatServer(describe) as server:
        VlmCaptioner(config(server)).caption([request])
        sent = server.requests[0].json
    url = image_url(sent)
    assert url.startswith("data:image/jpeg;base64,")
    assert base64.b64decode(url.split(",", 1)[1]) == request.image
    assert sent["model"] == "vl-test"
    assert sent["messages"][0]["role"] == "user"


def test_each_template_gets_its_own_prompt_with_the_word_limit():
    with ChatServer(describe) as server:
        VlmCaptioner(config(server, max_words=37)).caption(make_requests(1))
        prompts = sorted((prompt_of(r.json) for r in server.requests), key=len)
    assert len(prompts) == 2
    texts = {t.text for t in TEMPLATES}
    assert {next(t for t in texts if t in p) for p in prompts} == texts
    assert all("37" in p for p in prompts)


def test_build_prompt_states_the_principles():
    prompt = build_prompt("A [man] in a [colored top].", 42).lower()
    assert "a [man] in a [colored top]." in prompt and "42" in prompt
    for idea in ["colour", "footwear", "background", "possibly", "template", "only"]:
        assert idea in prompt


def test_captions_follow_request_order_and_seeds():
    requests = make_requests(6)
    with ChatServer(describe) as server:
        results = VlmCaptioner(config(server, concurrency=4)).caption(requests)
    for request, result in zip(requests, results):
        assert result.error is None
        assert result.captions == [
            f"A person {request.key} in a red coat, seed {request.seed}.",
            f"A person {request.key} in a red coat, seed {request.seed + 1}.",
        ]


def test_same_inputs_give_the_same_captions():
    requests = make_requests(3)
    with ChatServer(describe) as server:
        captioner = VlmCaptioner(config(server))
        assert captioner.caption(requests) == captioner.caption(requests)


def test_results_keep_request_order_when_replies_finish_out_of_order():
    def later_first(request_json, call_index):
        index = int(key_of(request_json)[4:])
        return Reply(json=describe(request_json, call_index).json, delay_s=0.02 * (8 - index))

    requests = make_requests(8, TEMPLATES[:1])
    with ChatServer(later_first) as server:
        results = VlmCaptioner(config(server, concurrency=8)).caption(requests)
    assert [r.captions[0].split()[2] for r in results] == [r.key for r in requests]


def test_no_more_calls_in_flight_than_the_concurrency():
    def slow(request_json, call_index):
        return Reply(json=describe(request_json, call_index).json, delay_s=0.15)

    with ChatServer(slow) as server:
        results = VlmCaptioner(config(server, concurrency=3)).caption(make_requests(6))
        peak, total = server.max_in_flight, len(server.requests)
    assert peak == 3
    assert total == 12 and all(r.captions for r in results)


def test_a_permanently_failing_crop_gives_an_error_result_and_the_others_succeed():
    def broken_for_crop2(request_json, call_index):
        if key_of(request_json) == "crop002":
            return error(500, "CUDA out of memory\nretry later")
        return describe(request_json, call_index)

    with ChatServer(broken_for_crop2) as server:
        results = VlmCaptioner(config(server, max_retries=2)).caption(make_requests(4))
        crop2_calls = [r for r in server.requests if key_of(r.json) == "crop002"]
    failed = results[2]
    assert failed.captions is None
    assert failed.error.startswith("caption_failed: ") and "HTTP 500" in failed.error
    assert "\n" not in failed.error
    assert len(crop2_calls) == 2 * 3  # two captions, each tried 1 + max_retries times
    assert all(r.error is None and len(r.captions) == 2 for i, r in enumerate(results) if i != 2)


def test_an_empty_answer_is_a_failure():
    def empty_for_crop1(request_json, call_index):
        if key_of(request_json) == "crop001":
            return completion('  "" \n')
        return describe(request_json, call_index)

    with ChatServer(empty_for_crop1) as server:
        results = VlmCaptioner(config(server)).caption(make_requests(2))
    assert results[0].captions is not None
    assert results[1].captions is None and results[1].error.startswith("caption_failed: ")


def test_over_long_answers_are_cut_to_max_words():
    long_answer = "A man wears a black jacket. He carries a blue backpack and walks along in white sneakers today."
    with ChatServer(lambda request_json, call_index: completion(long_answer)) as server:
        results = VlmCaptioner(config(server, max_words=10)).caption(make_requests(1, TEMPLATES[:1]))
    assert results[0].captions == ["A man wears a black jacket."]


def test_answers_are_cleaned_to_one_line():
    messy = 'Caption: "A woman in a green coat\nand black boots."  '
    with ChatServer(lambda request_json, call_index: completion(messy)) as server:
        results = VlmCaptioner(config(server)).caption(make_requests(1, TEMPLATES[:1]))
    assert results[0].captions == ["A woman in a green coat and black boots."]


def test_captioner_builds_its_client_from_the_config(monkeypatch):
    monkeypatch.setenv("GADMS_TEST_VLM_KEY", "vlm-secret-123")
    with ChatServer(describe) as server:
        captioner = VlmCaptioner(config(server, api_key_env="GADMS_TEST_VLM_KEY"))
        captioner.caption(make_requests(1, TEMPLATES[:1]))
        sent = server.requests[0]
    assert sent.headers["authorization"] == "Bearer vlm-secret-123"
    assert sent.path == "/v1/chat/completions"
    assert "vlm-secret-123" not in repr(captioner)


def test_a_given_client_is_used():
    with ChatServer(describe) as server:
        client = ChatClient(server.url, "other-model")
        VlmCaptioner(config(server), client=client).caption(make_requests(1, TEMPLATES[:1]))
        assert server.requests[0].json["model"] == "other-model"


def test_a_request_without_templates_is_rejected():
    with pytest.raises(ValueError, match="crop000"):
        VlmCaptioner(CaptioningConfig()).caption(make_requests(1, ()))


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("A man in a red coat.", "A man in a red coat."),
        ("  A man in a red coat.\n\n", "A man in a red coat."),
        ('"A man in a red coat."', "A man in a red coat."),
        ("Caption: A man in a red coat.", "A man in a red coat."),
        ("caption 1 - A man in a red coat.", "A man in a red coat."),
        ("**Caption:** A man in a red coat.", "A man in a red coat."),
        ("Here is the caption: \u201cA man in a red coat.\u201d", "A man in a red coat."),
        ("A man in a red\n coat\tand jeans.", "A man in a red coat and jeans."),
        ("", None),
        ("  \n ", None),
        ('""', None),
        ("Caption:", None),
    ],
)
def test_clean_caption(raw, expected):
    assert clean_caption(raw, 60) == expected


@pytest.mark.parametrize(
    "text, limit, expected",
    [
        ("One two three.", 3, "One two three."),
        ("One two. Three four five six.", 4, "One two."),
        ("One two! Three? four five six", 5, "One two! Three?"),
        ("One two three four five six", 4, "One two three four."),
        ("One two three, four five", 3, "One two three."),
    ],
)
def test_truncate_words(text, limit, expected):
    assert truncate_words(text, limit) == expected
    assert len(truncate_words(text, limit).split()) <= limit
