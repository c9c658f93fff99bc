"""Captioning person crops with a vision LLM behind an OpenAI-compatible endpoint (SPEC 3.3).

Each crop gets one caption per template its request carries. The model is told
to describe only the dominant pedestrian, in the template's sentence structure
and under a word limit; answers are then cleaned (labels, quotes, line breaks
removed) and cut to the limit at a sentence end.
"""

from __future__ import annotations

import base64
import re
from typing import Any, Optional, Sequence

from gadms.config import CaptioningConfig
from gadms.curation.chat import ChatCall, ChatClient, ChatError
from gadms.curation.records import CaptionRequest, CaptionResult

# Greedy decoding: the same crop, template and seed give the same caption (the DVC hash depends on it).
TEMPERATURE = 0.0
QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"
SENTENCE_END = (".", "!", "?")
_LABEL = re.compile(
    r"^(?:\*\*)?(?:here(?:'s| is) (?:the|a|your) (?:caption|description)|caption|description|answer|output)"
    r"(?:\s*\d+)?(?:\*\*)?\s*[:\-\u2013\u2014]\s*(?:\*\*)?\s*",
    re.IGNORECASE,
)

_PROMPT = """\
Write one caption for a text-based person search dataset about the person in this image.

Template: {template}

Follow these rules:
1. Describe only the main pedestrian, the most prominent person in the image. Ignore everyone else.
2. Mention what you can see of: gender, upper-body clothing, lower-body clothing, footwear, \
hair and headwear, accessories (bags, glasses, jewellery, items carried), and what the person is doing.
3. Give the colour of every part you mention. Use a rough shade such as "dark" or "light" only \
when the exact colour cannot be told.
4. Name the type of each garment (jacket, T-shirt, jeans, skirt, ...). Say just "top" or \
"bottom" only when the type cannot be told.
5. Say nothing about the background, the place, the lighting or the mood of the picture.
6. Write only what is clearly visible. Never hedge with words such as "possibly", "maybe", \
"seems" or "appears to be". Do not guess who the person is, their job or their feelings, \
and do not comment on the photo or art style.
7. Keep the sentence structure of the template and replace every bracketed placeholder with \
what you see. If a detail is not visible, reword that part; never leave brackets in the caption.
8. Use fewer than {max_words} words, in plain everyday English with correct grammar.
9. Reply with the caption only: no title, no quotes, no explanation."""


def build_prompt(template_text: str, max_words: int) -> str:
    """The instruction sent with a crop: SPEC 3.3's principles applied to one template.

    Args:
        template_text: the template whose structure the caption must follow.
        max_words: the word limit the caption must stay under.

    Returns:
        The prompt text.
    """
    return _PROMPT.format(template=template_text.strip(), max_words=max_words)


def image_data_url(jpeg: bytes) -> str:
    """Encode JPEG bytes as a ``data:image/jpeg;base64,...`` URL.

    Args:
        jpeg: the encoded image.

    Returns:
        The data URL.
    """
    return "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")


def caption_messages(jpeg: bytes, template_text: str, max_words: int) -> list[dict[str, Any]]:
    """The chat messages asking for one caption of one crop (OpenAI vision format).

    Args:
        jpeg: the crop as JPEG bytes.
        template_text: the template to follow.
        max_words: the word limit.

    Returns:
        A one-message conversation: the image, then the instruction.
    """
    content = [
        {"type": "image_url", "image_url": {"url": image_data_url(jpeg)}},
        {"type": "text", "text": build_prompt(template_text, max_words)},
    ]
    return [{"role": "user", "content": content}]


def clean_caption(text: str, max_words: int) -> Optional[str]:
    """Turn a model answer into a one-line caption of at most ``max_words`` words.

    Args:
        text: the raw answer.
        max_words: the word limit.

    Returns:
        The caption without labels ("Caption:"), surrounding quotes or line
        breaks, cut at the last sentence end within the limit (or at the limit);
        ``None`` when nothing is left.
    """
    line = " ".join(text.split())
    line = _strip_quotes(_LABEL.sub("", _strip_quotes(line)))
    line = line.strip("* ").strip()
    if not line:
        return None
    return truncate_words(line, max_words)


def truncate_words(text: str, max_words: int) -> str:
    """Cut ``text`` to at most ``max_words`` words, preferring a sentence end.

    Args:
        text: a one-line caption.
        max_words: the word limit.

    Returns:
        ``text`` itself when short enough; else its longest prefix ending a
        sentence within the limit; else the first ``max_words`` words, ended with a period.
    """
    words = text.split()
    if len(words) <= max_words:
        return text
    kept = words[:max_words]
    ends = [i for i, word in enumerate(kept) if word.rstrip(QUOTES + ")").endswith(SENTENCE_END)]
    if ends:
        return " ".join(kept[: ends[-1] + 1])
    return " ".join(kept).rstrip(",;:-\u2013\u2014 ") + "."


def _strip_quotes(text: str) -> str:
    return text.strip().strip(QUOTES).strip()


class VlmCaptioner:
    """Writes captions for person crops with a vision LLM (e.g. Qwen2.5-VL served by vLLM)."""

    def __init__(self, cfg: CaptioningConfig, client: ChatClient | None = None) -> None:
        """Set up the captioner.

        Args:
            cfg: the captioning section of params.yaml (endpoint, model, limits).
            client: a ready chat client; one is built from ``cfg`` when ``None``.
        """
        self.cfg = cfg
        self.client = client or ChatClient(
            cfg.vlm_url,
            cfg.vlm_model,
            api_key_env=cfg.api_key_env,
            timeout_s=cfg.timeout_s,
            max_retries=cfg.max_retries,
            backoff_s=cfg.backoff_s,
        )

    def __repr__(self) -> str:
        return f"VlmCaptioner(client={self.client!r}, concurrency={self.cfg.concurrency})"

    def caption(self, requests: Sequence[CaptionRequest]) -> list[CaptionResult]:
        """Caption every request, at most ``cfg.concurrency`` HTTP calls in flight.

        Args:
            requests: the crops to caption, each with the templates to follow.

        Returns:
            One result per request, in the same order: one caption per template,
            or ``CaptionResult(None, error="caption_failed: ...")`` when any of
            its calls failed for good or answered nothing usable.

        Raises:
            ValueError: a request carries no template.
        """
        for request in requests:
            if not request.templates:
                raise ValueError(f"caption request {request.key!r}: no templates given")
        calls = [call for request in requests for call in self._calls(request)]
        answers = iter(self.client.complete_many(calls, self.cfg.concurrency))
        return [self._result([next(answers) for _ in request.templates]) for request in requests]

    def _calls(self, request: CaptionRequest) -> list[ChatCall]:
        """One chat call per template; the seed differs per caption so two captions can differ."""
        return [
            ChatCall(
                caption_messages(request.image, template.text, self.cfg.max_words),
                max_tokens=self._max_tokens(),
                temperature=TEMPERATURE,
                seed=request.seed + index,
            )
            for index, template in enumerate(request.templates)
        ]

    def _max_tokens(self) -> int:
        # About 1.3 tokens a word; the headroom lets a slightly long answer end so truncate_words can cut it well.
        return 2 * self.cfg.max_words + 32

    def _result(self, answers: list[str | ChatError]) -> CaptionResult:
        captions = []
        for index, answer in enumerate(answers):
            if isinstance(answer, ChatError):
                return _failed(str(answer))
            caption = clean_caption(answer, self.cfg.max_words)
            if caption is None:
                return _failed(f"caption {index + 1}: empty answer")
            captions.append(caption)
        return CaptionResult(captions)


def _failed(reason: str) -> CaptionResult:
    return CaptionResult(None, error="caption_failed: " + " ".join(reason.split()))
