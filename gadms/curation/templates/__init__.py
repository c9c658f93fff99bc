"""Caption templates (SPEC 3.1-3.2): extract from captions, cluster, store.

A template is a person description whose attribute words are replaced by
generic placeholders (:data:`PLACEHOLDERS`), e.g. "the man is wearing a black
jacket and blue jeans." -> "The [man] is wearing a [colored top] and
[colored bottom]." Two extractors: ``rule`` (offline; a vocabulary of
real-world person-description words) and ``llm`` (an instruction LLM behind an
OpenAI-compatible endpoint, its answers validated). Templates are embedded with
the project's CLIP text tower and k-means clustered; per cluster the template
nearest the centroid plus a few random members are kept (optionally the LLM
writes new ones from each cluster). The result is a canonical JSON file: the
same captions, parameters and seed give the same bytes, on any CPU.

Modules: ``vocabulary`` (placeholders and description words), ``rules`` (the rule
extractor), ``checks`` (what a valid template is), ``llm`` (LLM extraction and
diversification), ``clustering`` and ``kmeans`` (embeddings, CPU-independent
k-means), ``mining`` (the whole pass), ``files`` (the templates file format),
``captions`` (caption sources).

The built-in ``default_templates.json`` is regenerated with::

    python -m gadms synth benchmark --out /tmp/gadms-templates --identities 150 --seed 0 --quiet
    python -m gadms.curation.templates --source /tmp/gadms-templates --with-examples \\
        --clusters 40 --random-members 1 --seed 0 --out gadms/curation/default_templates.json
"""

from gadms.curation.templates.captions import STYLE_EXAMPLES, captions_from_source
from gadms.curation.templates.checks import template_placeholders, template_problem
from gadms.curation.templates.clustering import TemplateCluster, cluster_templates, embed_templates, unique_in_order
from gadms.curation.templates.files import (
    DEFAULT_TEMPLATES_FILE,
    FORMAT,
    default_templates,
    load_templates,
    parse_templates,
    template_set_json,
    write_templates,
)
from gadms.curation.templates.llm import (
    diversification_messages,
    extract_templates_llm,
    extraction_messages,
    parse_diversified,
    validate_llm_template,
)
from gadms.curation.templates.mining import MinedTemplate, TemplateSet, mine_templates
from gadms.curation.templates.rules import (
    capitalize_sentence,
    extract_template_rule,
    render_tokens,
    split_sentences,
    tokenize,
)
from gadms.curation.templates.vocabulary import COLOR_WORDS, CONTENT_PLACEHOLDERS, PLACEHOLDERS, PRONOUNS

__all__ = [
    "COLOR_WORDS",
    "CONTENT_PLACEHOLDERS",
    "DEFAULT_TEMPLATES_FILE",
    "FORMAT",
    "PLACEHOLDERS",
    "PRONOUNS",
    "STYLE_EXAMPLES",
    "MinedTemplate",
    "TemplateCluster",
    "TemplateSet",
    "capitalize_sentence",
    "captions_from_source",
    "cluster_templates",
    "default_templates",
    "diversification_messages",
    "embed_templates",
    "extract_template_rule",
    "extract_templates_llm",
    "extraction_messages",
    "load_templates",
    "mine_templates",
    "parse_diversified",
    "parse_templates",
    "render_tokens",
    "split_sentences",
    "template_placeholders",
    "template_problem",
    "template_set_json",
    "tokenize",
    "unique_in_order",
    "validate_llm_template",
    "write_templates",
]
