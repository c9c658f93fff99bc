"""Mine templates into a templates file: ``python -m gadms.curation.templates``."""

from __future__ import annotations

import argparse
from pathlib import Path

from gadms.config import TemplatesConfig
from gadms.curation.templates.captions import STYLE_EXAMPLES, captions_from_source
from gadms.curation.templates.files import write_templates
from gadms.curation.templates.mining import mine_templates


def main(argv: list[str] | None = None) -> None:
    """Mine templates from a caption source into a templates file (regenerates the built-in set)."""
    parser = argparse.ArgumentParser(description="Mine caption templates into a canonical JSON file.")
    parser.add_argument("--source", type=Path, required=True, help="text file, JSON list, or benchmark root")
    parser.add_argument("--out", type=Path, required=True, help="templates file to write")
    parser.add_argument("--with-examples", action="store_true", help="also mine the built-in CUHK-style examples")
    parser.add_argument("--clusters", type=int, default=40)
    parser.add_argument("--random-members", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sentences = captions_from_source(args.source)
    description = f"{args.source.name} ({len(sentences)} captions)"
    if args.with_examples:
        sentences += list(STYLE_EXAMPLES)
        description += f" + {len(STYLE_EXAMPLES)} style examples"
    cfg = TemplatesConfig(clusters=args.clusters, random_members=args.random_members)
    result = mine_templates(sentences, cfg, args.seed, source=description)
    write_templates(args.out, result)
    print(
        f"wrote {len(result.templates)} templates ({result.clusters} clusters, {result.unique} distinct) to {args.out}"
    )


if __name__ == "__main__":
    main()
