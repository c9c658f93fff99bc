"""The LLM extractor and diversifier: prompts, answer validation, parsing."""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Sequence

from gadms.curation.templates.checks import concrete_words, template_problem
from gadms.curation.templates.rules import tokenize
from gadms.curation.templates.vocabulary import PLACEHOLDER_RE, PLACEHOLDERS

if TYPE_CHECKING:  # chat pulls in httpx; only the llm paths need it at run time
    from gadms.curation.chat import ChatClient

logger = logging.getLogger(__name__)

_EXTRACT_INSTRUCTION = """You turn descriptions of a pedestrian into reusable caption templates.
Replace every word that describes this particular person with the generic placeholder that stands for it: gender, \
age, hair and other head features, tops, bottoms, footwear, headwear, bags and other accessories, colours, patterns \
and actions. A colour and the thing it describes become one placeholder ("a dark blue denim jacket" -> \
"a [colored top]"). Use only these placeholders:
{placeholders}
Keep every other word, the sentence structure and the punctuation. Add nothing. Drop sentences about the \
background or the photo. Answer with the template only, on one line.

Example: "A woman in a red coat and black boots is walking. She carries a white bag."
Answer: A [man] in a [colored top] and [colored footwear] is [action]. [he] carries a [colored bag]."""

_DIVERSIFY_INSTRUCTION = """You write caption templates for describing pedestrians.
A template uses placeholders instead of concrete attributes; the placeholders are:
{placeholders}
Write {count} new templates in the style of the examples below, each on its own line: vary the sentence \
structure and the order in which the attributes are described, use only the placeholders above, never write a \
concrete colour, garment or gender word, and mention nothing about the background. Answer with the templates only.

Examples:
{examples}"""

# Words a rephrasing LLM may add without adding content (articles, linking verbs, prepositions).
_FUNCTION_WORDS = frozenset(
    "a an the and or with in on of is are was were has have had wearing wears wear who which that this there "
    "while also to at by for from as his her their its".split()
)
MAX_NEW_WORDS = 2
LLM_CONCURRENCY = 8


def _placeholder_list() -> str:
    return "\n".join(f"{p}: {meaning}" for p, meaning in PLACEHOLDERS.items())


def extraction_messages(sentence: str) -> list[dict[str, str]]:
    """The chat messages asking the LLM to turn ``sentence`` into a template.

    Args:
        sentence: one caption.

    Returns:
        A system message with the instruction and a user message with the caption.
    """
    system = _EXTRACT_INSTRUCTION.format(placeholders=_placeholder_list())
    return [{"role": "system", "content": system}, {"role": "user", "content": sentence.strip()}]


def _strip_answer(answer: str) -> str:
    """The first non-empty line of an answer, without a label, quotes or bullet."""
    lines = [line.strip() for line in answer.strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = re.sub(r"^(template|answer)\s*:\s*", "", lines[0], flags=re.IGNORECASE)
    line = re.sub(r"^(\d+[.)]|[-*\u2022])\s+", "", line)
    return line.strip().strip("\"'\u201c\u201d").strip()


def validate_llm_template(answer: str, sentence: str) -> str | None:
    """The LLM's answer as a template if it is one, else None.

    Args:
        answer: the raw model answer.
        sentence: the caption it was made from.

    Returns:
        The cleaned template when it uses only known placeholders, has at least
        one describing the person, keeps no colour or garment word, and adds at
        most :data:`MAX_NEW_WORDS` content words not in ``sentence``; else None.
    """
    text = " ".join(_strip_answer(answer).split())
    text = PLACEHOLDER_RE.sub(lambda m: m.group(0).lower(), text)
    if template_problem(text) is not None or concrete_words(text):
        return None
    source = set(tokenize(sentence))
    words = [t for t in tokenize(PLACEHOLDER_RE.sub(" ", text)) if t[0].isalnum()]
    new = [w for w in words if w not in source and w not in _FUNCTION_WORDS]
    if len(new) > MAX_NEW_WORDS or len(words) > len(source) + 5:
        return None
    return text


def extract_templates_llm(sentences: Sequence[str], client: "ChatClient", seed: int = 0) -> list[str | None]:
    """Turn captions into templates with an instruction LLM (SPEC 3.1).

    Args:
        sentences: the captions.
        client: the chat client of the LLM endpoint.
        seed: sampling seed sent with every request (answers are greedy anyway).

    Returns:
        One entry per caption: the validated template, or None when the call
        failed for good or the answer was not a valid template.
    """
    from gadms.curation.chat import ChatCall, ChatError

    calls = [ChatCall(extraction_messages(s), max_tokens=192, temperature=0.0, seed=seed) for s in sentences]
    answers = client.complete_many(calls, LLM_CONCURRENCY) if calls else []
    failed = [a for a in answers if isinstance(a, ChatError)]
    if failed:
        logger.warning("template extraction: %d of %d LLM calls failed; first: %s", len(failed), len(calls), failed[0])
    return [None if isinstance(a, ChatError) else validate_llm_template(a, s) for a, s in zip(answers, sentences)]


def diversification_messages(examples: Sequence[str], count: int) -> list[dict[str, str]]:
    """The chat messages asking for ``count`` new templates in the style of ``examples``.

    Args:
        examples: one cluster's templates.
        count: how many new templates to ask for.

    Returns:
        A single user message.
    """
    listed = "\n".join(examples)
    text = _DIVERSIFY_INSTRUCTION.format(placeholders=_placeholder_list(), count=count, examples=listed)
    return [{"role": "user", "content": text}]


def parse_diversified(answer: str) -> list[str]:
    """The valid templates of a diversification answer, in order, each once.

    Args:
        answer: the raw model answer, one template per line.

    Returns:
        Templates with only known placeholders, one describing the person, and
        no concrete colour or garment word.
    """
    out: list[str] = []
    for line in answer.splitlines():
        text = " ".join(_strip_answer(line).split())
        text = PLACEHOLDER_RE.sub(lambda m: m.group(0).lower(), text)
        if text and text not in out and template_problem(text) is None and not concrete_words(text):
            out.append(text)
    return out
