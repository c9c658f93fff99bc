"""Template extraction (rule and LLM), clustering, mining and the templates file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from gadms.config import TemplatesConfig
from gadms.curation.chat import ChatClient
from gadms.curation.records import Template
from gadms.curation.templates import (
    PLACEHOLDERS,
    captions_from_source,
    cluster_templates,
    default_templates,
    embed_templates,
    extract_template_rule,
    extract_templates_llm,
    load_templates,
    mine_templates,
    template_problem,
    validate_llm_template,
    write_templates,
)
from gadms.problems import DataError

from .chat_server import ChatServer, completion, error

# CUHK-PEDES-style captions (written for these tests) and the template each must give.
RULE_CASES = [
    (
        "a woman wearing a dark green coat and black jeans. she is carrying a white handbag.",
        "A [man] wearing a [colored top] and [colored bottom]. [he] is carrying a [colored bag].",
    ),
    (
        "the man has short brown hair and wears a light grey sweater, navy trousers and white sneakers.",
        "The [man] has [hair] and wears a [colored top], [colored bottom] and [colored footwear].",
    ),
    (
        "this young girl is wearing a pink and white checkered dress with brown sandals",
        "This [age] [man] is wearing a [colored top] with [colored footwear].",
    ),
    (
        "a man in a blue striped shirt , black pants , and black leather shoes walking down the road",
        "A [man] in a [colored top], [colored bottom], and [colored footwear] [action].",
    ),
    (
        "the lady wears a black hat, a red scarf, a long beige coat and brown boots. she has a black purse on her "
        "shoulder.",
        "The [man] wears a [colored headwear], a [accessory], a [colored top] and [colored footwear]. "
        "[he] has a [colored bag] on [his] shoulder.",
    ),
    (
        "a male with glasses in a white t-shirt with a black logo, khaki shorts and grey running shoes",
        "A [man] with [glasses] in a [colored top] with [color pattern], [colored bottom] and [colored footwear].",
    ),
    (
        "he is wearing a dark blue hoodie under a black vest and has a grey backpack",
        "[he] is wearing a [colored inner top] under a [colored top] and has a [colored bag].",
    ),
    (
        "the man is wearing a black jacket over a white t-shirt, blue jeans and white sneakers. he carries a black "
        "backpack on his back.",
        "The [man] is wearing a [colored top] over a [colored inner top], [colored bottom] and [colored footwear]. "
        "[he] carries a [colored bag] on [his] back.",
    ),
    (
        "an old man with white hair and a grey beard, wearing a black overcoat",
        "A [age] [man] with [hair] and a [facial hair], wearing a [colored top].",
    ),
    ("She's wearing a yellow raincoat and rubber boots.", "[he]'s wearing a [colored top] and [colored footwear]."),
    (
        "A man in a black coat is talking on his cell phone while walking across the crosswalk",
        "A [man] in a [colored top] is [action].",
    ),
    # a sentence that states a colour outside a garment phrase is dropped, the rest kept
    ("the woman is walking. her hair is long and brown.", "The [man] is [action]."),
]


@pytest.mark.parametrize(("caption", "expected"), RULE_CASES)
def test_rule_extractor_turns_cuhk_style_captions_into_templates(caption, expected):
    assert extract_template_rule(caption) == expected


@pytest.mark.parametrize(
    "caption",
    ["a picture of a busy street with cars.", "the photo is too dark to see clearly", "the man's jacket is black", ""],
)
def test_rule_extractor_returns_none_without_usable_person_content(caption):
    assert extract_template_rule(caption) is None


def test_rule_templates_are_valid_and_keep_no_attribute_words():
    for caption, _ in RULE_CASES:
        template = extract_template_rule(caption)
        assert template_problem(template) is None
        words = set(template.lower().replace(".", " ").replace(",", " ").split())
        assert not words & {"black", "white", "blue", "jacket", "jeans", "she", "woman", "backpack", "sneakers"}


def test_rule_extractor_collapses_variants_that_differ_only_in_articles():
    one = extract_template_rule("a man in an orange shirt and a red skirt.")
    two = extract_template_rule("a man in a blue shirt and red jeans.")
    assert one == two == "A [man] in a [colored top] and [colored bottom]."


def test_template_problem_names_what_is_wrong():
    assert template_problem("A [man] in a [colored top].") is None
    assert template_problem("A [man] in a [shiny top].") == "unknown placeholder [shiny top]"
    assert template_problem("[he] is here.") == "no placeholder describing the person"
    assert template_problem("A [man] in a [colored top") == "unbalanced brackets"
    assert template_problem("  ") == "empty template"


def test_placeholders_are_bracketed_lower_case():
    assert all(p.startswith("[") and p.endswith("]") and p == p.lower() for p in PLACEHOLDERS)
    assert {"[man]", "[he]", "[his]", "[colored top]", "[color pattern]", "[colored bottom]", "[action]"} <= set(
        PLACEHOLDERS
    )


# ------------------------------------------------------------------ LLM answers


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        (
            "A [man] wearing a [colored top] and [colored bottom].",
            "A [man] wearing a [colored top] and [colored bottom].",
        ),
        (
            'Template: "A [Man] wearing a [colored top] and [colored bottom]."',
            "A [man] wearing a [colored top] and [colored bottom].",
        ),
        ("A [man] wearing a [red top] and [colored bottom].", None),  # unknown placeholder
        ("A man wearing a shirt.", None),  # no placeholder
        ("A [man] wearing a black [colored top] and [colored bottom].", None),  # kept a colour
        (
            "A [man] wearing a [colored top] and [colored bottom] near a fountain under tall palm trees.",
            None,
        ),  # invented content
    ],
)
def test_llm_answers_are_validated(answer, expected):
    sentence = "A man wearing a red shirt and blue jeans."
    assert validate_llm_template(answer, sentence) == expected


def _answer_for(sentence: str) -> str:
    answers = {
        "A man wearing a red shirt and blue jeans.": "A [man] wearing a [colored top] and [colored bottom].",
        "She carries a black bag.": "[she] carries a [colored bag].",
        "The woman walks her dog in the park.": (
            "The [man] walks [his] dog near the big old fountain in the sunny park today."
        ),
    }
    return answers.get(sentence, "")


def test_llm_extractor_sends_each_caption_and_keeps_only_valid_answers():
    def handler(request, index):
        return completion(_answer_for(request["messages"][-1]["content"]))

    sentences = [
        "A man wearing a red shirt and blue jeans.",
        "She carries a black bag.",
        "The woman walks her dog in the park.",
    ]
    with ChatServer(handler) as server:
        client = ChatClient(server.url, "test-model", max_retries=0)
        result = extract_templates_llm(sentences, client)
        sent = sorted(r.json["messages"][-1]["content"] for r in server.requests)
        system = server.requests[0].json["messages"][0]["content"]
    assert result == ["A [man] wearing a [colored top] and [colored bottom].", None, None]
    assert sent == sorted(sentences)
    assert all(p in system for p in PLACEHOLDERS) and "Add nothing" in system


def test_llm_extractor_gives_none_when_the_endpoint_fails():
    with ChatServer(lambda request, index: error(400, "bad request")) as server:
        client = ChatClient(server.url, "test-model", max_retries=0)
        assert extract_templates_llm(["A man in a red shirt."], client) == [None]


def test_mining_with_llm_extractor_reports_when_nothing_was_extracted():
    cfg = TemplatesConfig(extractor="llm", clusters=2)
    with ChatServer(lambda request, index: completion("no idea")) as server:
        client = ChatClient(server.url, "test-model", max_retries=0)
        with pytest.raises(DataError, match="none of 2 captions gave a template"):
            mine_templates(["A man in a red shirt.", "A woman in a blue coat."], cfg, seed=0, client=client)


def test_diversification_adds_only_valid_new_templates_once():
    new = "Dressed in a [colored top] and [colored bottom], the [man] is [action]."
    answer = "\n".join(
        [
            f"1. {new}",
            "2. A [man] in a [sparkly top].",  # unknown placeholder
            "3. A [man] in a red [colored top].",  # concrete colour
            "4. A [man] wearing a [colored top] and [colored bottom].",  # already mined
        ]
    )
    sentences = [caption for caption, _ in RULE_CASES] + ["a man wearing a red shirt and blue jeans."]
    cfg = TemplatesConfig(clusters=3, random_members=1, diversify=True)
    with ChatServer(lambda request, index: completion(answer)) as server:
        client = ChatClient(server.url, "test-model", max_retries=0)
        result = mine_templates(sentences, cfg, seed=0, client=client)
        calls = len(server.requests)
    diversified = [t for t in result.templates if t.origin == "diversified"]
    assert calls == result.clusters == 3
    assert [t.text for t in diversified] == [new]
    assert result.diversified


# ------------------------------------------------------------------ clustering


def _grouped_embeddings(rng: np.random.Generator) -> tuple[list[str], np.ndarray, list[set[str]]]:
    """Three tight groups of four around orthogonal directions."""
    centers = np.eye(8)[:3]
    texts, rows, groups = [], [], []
    for g, center in enumerate(centers):
        names = {f"g{g}-{i}" for i in range(4)}
        groups.append(names)
        for i in range(4):
            texts.append(f"g{g}-{i}")
            rows.append(center + rng.normal(0, 0.05, 8))
    return texts, np.array(rows), groups


def test_clusters_follow_the_groups_with_the_centroid_nearest_as_representative():
    texts, emb, groups = _grouped_embeddings(np.random.default_rng(1))
    clusters = cluster_templates(texts, emb, k=3, random_members=2, seed=0)
    assert len(clusters) == 3
    unit = emb / np.linalg.norm(emb, axis=1, keepdims=True)
    for cluster in clusters:
        group = next(g for g in groups if cluster.representative in g)
        rows = [texts.index(t) for t in sorted(group)]
        centroid = unit[rows].mean(axis=0)
        nearest = sorted(group)[int(np.argmax(unit[rows] @ centroid))]
        assert cluster.representative == nearest
        assert set(cluster.members) <= group - {nearest} and len(cluster.members) == 2
        assert cluster.size == 4


def test_clustering_dedupes_caps_k_and_is_seeded():
    texts, emb, _ = _grouped_embeddings(np.random.default_rng(2))
    doubled = texts + texts[:5]
    doubled_emb = np.concatenate([emb, emb[:5]])
    clusters = cluster_templates(doubled, doubled_emb, k=50, random_members=1, seed=3)
    assert len(clusters) == len(texts)  # k capped at the 12 distinct templates
    assert sorted(c.representative for c in clusters) == sorted(texts)
    again = cluster_templates(doubled, doubled_emb, k=3, random_members=2, seed=3)
    assert again == cluster_templates(doubled, doubled_emb, k=3, random_members=2, seed=3)


def test_clustering_rejects_misaligned_embeddings():
    with pytest.raises(ValueError, match="3 templates but 2 embedding rows"):
        cluster_templates(["a", "b", "c"], np.zeros((2, 4)), k=2, random_members=0, seed=0)


def test_template_embeddings_are_unit_deterministic_and_batch_independent():
    cfg = TemplatesConfig(embedder="tiny")
    texts = ["A [man] in a [colored top].", "[he] carries a [colored bag].", "A [man] in a [colored top]."]
    first = embed_templates(texts, cfg, seed=0)
    assert first.shape == (3, 64) and first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(first, embed_templates(texts, cfg, seed=0))
    np.testing.assert_allclose(first, embed_templates(texts, cfg, seed=0, batch_size=1), atol=1e-5)
    np.testing.assert_array_equal(first[0], first[2])
    assert not np.allclose(first, embed_templates(texts, cfg, seed=1))


# ------------------------------------------------------------------ mining and files


def _mine(seed: int = 0):
    sentences = [caption for caption, _ in RULE_CASES] * 2 + ["a picture of a street."]
    cfg = TemplatesConfig(clusters=4, random_members=1)
    return mine_templates(sentences, cfg, seed, source="test captions")


def test_mined_file_is_canonical_and_reproducible(tmp_path):
    first, second = write_templates(tmp_path / "a.json", _mine()), write_templates(tmp_path / "b.json", _mine())
    assert first.read_bytes() == second.read_bytes()
    doc = json.loads(first.read_text())
    assert doc["extractor"] == "rule" and doc["seed"] == 0 and doc["source"] == "test captions"
    assert (doc["sentences"], doc["extracted"], doc["unique"]) == (25, 24, 12)
    entries = doc["templates"]
    assert [e["id"] for e in entries] == list(range(len(entries)))
    assert doc["clusters"] == 4
    for cluster in range(4):  # the representative, then at most random_members others
        members = [e for e in entries if e["cluster"] == cluster]
        assert [e["representative"] for e in members][:1] == [True] and 1 <= len(members) <= 2
    assert all(e["origin"] == "extracted" for e in entries)
    assert first.read_text() == json.dumps(doc, sort_keys=True, indent=1, ensure_ascii=False) + "\n"


def test_written_templates_load_back(tmp_path):
    mined = _mine()
    path = write_templates(tmp_path / "sub" / "templates.json", mined)
    assert load_templates(path) == mined.as_templates()
    assert all(isinstance(t, Template) for t in load_templates(path))


def test_load_templates_accepts_a_plain_list(tmp_path):
    path = tmp_path / "t.json"
    path.write_text(json.dumps(["A [man] in a [colored top].", "[he] has a [colored bag]."]))
    assert load_templates(path) == [
        Template(0, "A [man] in a [colored top]."),
        Template(1, "[he] has a [colored bag]."),
    ]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "templates file not found"),
        ("{not json", "invalid JSON at line 1"),
        ('{"templates": 3}', "expected a JSON object with a 'templates' list"),
        (
            '{"templates": [{"id": 0, "text": "A [man] in a [shiny top]."}]}',
            "template 0 .*unknown placeholder \\[shiny top\\]",
        ),
        ('{"templates": [{"id": 0}]}', "template 0 has no 'text' string"),
        ('["A [man] in a [colored top].", {"id": 0, "text": "A [man]."}]', "template ids repeat"),
    ],
)
def test_load_templates_errors_are_one_line_and_name_the_file(tmp_path, content, message):
    path = tmp_path / "templates.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        load_templates(path)
    assert "\n" not in str(caught.value) and str(path) in str(caught.value)


def test_default_templates_ship_with_the_package():
    templates = default_templates()
    assert 30 <= len(templates) <= 80
    assert [t.id for t in templates] == list(range(len(templates)))
    assert len({t.text for t in templates}) == len(templates)
    assert all(template_problem(t.text) is None for t in templates)
    assert sum("[man]" in t.text for t in templates) > len(templates) // 2


@pytest.mark.slow
def test_default_templates_regenerate_byte_for_byte(tmp_path):
    """The command in gadms.curation.templates' docstring rebuilds the shipped file exactly."""
    bench = tmp_path / "gadms-templates"
    run = [
        sys.executable,
        "-m",
        "gadms",
        "synth",
        "benchmark",
        "--out",
        str(bench),
        "--identities",
        "150",
        "--seed",
        "0",
        "--quiet",
    ]
    subprocess.run(run, check=True, capture_output=True, cwd=tmp_path)
    out = tmp_path / "default_templates.json"
    mine = [
        sys.executable,
        "-m",
        "gadms.curation.templates",
        "--source",
        str(bench),
        "--with-examples",
        "--clusters",
        "40",
        "--random-members",
        "1",
        "--seed",
        "0",
        "--out",
        str(out),
    ]
    subprocess.run(mine, check=True, capture_output=True, cwd=tmp_path)
    shipped = Path(__file__).parents[2] / "gadms" / "curation" / "default_templates.json"
    assert out.read_bytes() == shipped.read_bytes()


# ------------------------------------------------------------------ caption sources


def test_captions_from_text_json_and_benchmark(tmp_path):
    text = tmp_path / "captions.txt"
    text.write_text("A man in a red shirt.\n\n  A woman in a blue coat.  \n")
    assert captions_from_source(text) == ["A man in a red shirt.", "A woman in a blue coat."]
    listed = tmp_path / "captions.json"
    listed.write_text(json.dumps(["one caption", "two"]))
    assert captions_from_source(listed) == ["one caption", "two"]
    root = tmp_path / "bench"
    (root / "CUHK-PEDES").mkdir(parents=True)
    records = [
        {"id": 1, "file_path": "a.jpg", "captions": ["train caption one", "train caption two"], "split": "train"},
        {"id": 2, "file_path": "b.jpg", "captions": ["a test caption"], "split": "test"},
    ]
    (root / "CUHK-PEDES" / "reid_raw.json").write_text(json.dumps(records))
    assert captions_from_source(root) == ["train caption one", "train caption two"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("missing.txt", None, "caption source not found"),
        ("bad.json", "[1, 2", "invalid JSON"),
        ("dict.json", '{"a": "b"}', "expected a JSON list of caption strings"),
        ("empty.txt", "\n\n", "no captions found"),
        ("folder", "", "no benchmark annotation file"),
    ],
)
def test_caption_source_errors_are_one_line(tmp_path, name, content, message):
    path = tmp_path / name
    if name == "folder":
        path.mkdir()
    elif content is not None:
        path.write_text(content)
    with pytest.raises(DataError, match=message) as caught:
        captions_from_source(path)
    assert "\n" not in str(caught.value)


# ------------------------------------------------------------------ CPU independence


def test_kmeans_matches_sklearn_on_separated_groups():
    from sklearn.cluster import KMeans

    from gadms.curation.templates.kmeans import kmeans_labels

    rng = np.random.default_rng(4)
    centers = np.eye(16)[:5]
    rows = np.concatenate([c + rng.normal(0, 0.05, (30, 16)) for c in centers])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    ours = kmeans_labels(rows, 5, seed=0)
    reference = KMeans(n_clusters=5, n_init=10, random_state=0).fit_predict(rows)
    pairs = {(int(a), int(b)) for a, b in zip(ours, reference)}
    assert len(pairs) == 5  # the same partition, up to label names


def test_clustering_ignores_last_bit_differences_between_cpus():
    """Float kernels differ in the last bits between CPUs; the clustering must not."""
    texts = [f"t{i}" for i in range(120)]
    rows = np.random.default_rng(5).normal(size=(120, 64))
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    noisy = rows * (1 + np.random.default_rng(6).normal(0, 1e-12, rows.shape))
    first = cluster_templates(texts, rows, k=12, random_members=1, seed=0)
    assert first == cluster_templates(texts, noisy, k=12, random_members=1, seed=0)
    assert first == cluster_templates(texts, rows[::-1][::-1].copy(), k=12, random_members=1, seed=0)


def test_template_embeddings_ignore_last_bit_differences(monkeypatch):
    """The text tower's output is rounded: a 1e-12 change in its float64 result changes no byte."""
    import gadms.curation.templates.clustering as templates

    cfg = TemplatesConfig(embedder="tiny")
    texts = [row.text for row in default_templates()[:20]]
    clean = embed_templates(texts, cfg, seed=0)
    real_embedder = templates._text_embedder

    def jittered(*args):
        model = real_embedder(*args)
        encode = model.encode_text
        model.encode_text = lambda tokens, normalize: encode(tokens, normalize=normalize) * (1 + 1e-12)
        return model

    monkeypatch.setattr(templates, "_text_embedder", jittered)
    assert embed_templates(texts, cfg, seed=0).tobytes() == clean.tobytes()
