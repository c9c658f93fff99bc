"""Caption sources to mine templates from, and the built-in style examples."""

from __future__ import annotations

import json
from pathlib import Path

from gadms.problems import DataError
from gadms.safe_files import read_text


def _benchmark_captions(root: Path) -> list[str]:
    """Train captions of every benchmark found at ``root`` (the folder itself or its benchmark folders)."""
    from gadms.data.benchmarks import FORMATS, load_benchmark

    found = [
        name
        for name, fmt in FORMATS.items()
        if (root / fmt.annotation).is_file() or (root / fmt.directory / fmt.annotation).is_file()
    ]
    if not found:
        names = ", ".join(fmt.annotation for fmt in FORMATS.values())
        raise DataError(f"{root}: a folder but no benchmark annotation file ({names}) in it or its benchmark folders")
    return [c for name in found for c in load_benchmark(name, root, "train", check_images=False).captions]


def _json_captions(path: Path) -> list[str]:
    """A JSON list of caption strings."""
    try:
        raw = json.loads(read_text(path, "JSON list of captions"))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: invalid JSON at line {err.lineno}, column {err.colno}: {err.msg}") from None
    if not isinstance(raw, list) or not all(isinstance(c, str) for c in raw):
        raise DataError(f"{path}: expected a JSON list of caption strings")
    return [c.strip() for c in raw if c.strip()]


def captions_from_source(source: Path | str) -> list[str]:
    """Captions to mine templates from.

    Args:
        source: a text file (one caption per line), a ``.json`` list of
            strings, or a benchmark root (CUHK-PEDES / ICFG-PEDES / RSTPReid
            layout; its train captions).

    Returns:
        The non-empty captions, in file order.

    Raises:
        DataError: one line when the source is missing, unreadable, of another
            shape, or holds no caption.
    """
    source = Path(source)
    if source.is_dir():
        captions = _benchmark_captions(source)
    elif not source.exists():
        raise DataError(f"caption source not found: {source}")
    elif source.suffix.lower() == ".json":
        captions = _json_captions(source)
    else:
        text = read_text(source, "text file of one caption per line")
        captions = [line.strip() for line in text.splitlines() if line.strip()]
    if not captions:
        raise DataError(f"{source}: no captions found")
    return captions


# -------------------------------------------------------------- style examples

# CUHK-PEDES-style descriptions written for this project (lower-case, loose
# punctuation), mixed into the captions the built-in templates are mined from.
STYLE_EXAMPLES: tuple[str, ...] = (
    "the man is wearing a black jacket over a white t-shirt, blue jeans and white sneakers. he carries a black "
    "backpack on his back.",
    "a young woman with long black hair, wearing a white blouse and a dark blue skirt. she is carrying a red handbag.",
    "the lady has her hair in a ponytail and wears a pink coat, black leggings and brown boots.",
    "a man in a grey hoodie and black shorts is walking down the street.",
    "this guy has short hair and glasses. he wears a navy blue polo shirt, khaki pants and black shoes",
    "woman wearing a red and white striped t-shirt, denim shorts and white sandals, with a brown shoulder bag",
    "the pedestrian is a female with a black cap, a grey jacket and black trousers; she is talking on her phone.",
    "a male pedestrian in a black down jacket with a white logo on the chest, gray sweatpants and black sneakers.",
    "he is wearing a white shirt. his shirt is tucked into his black trousers.",
    "a woman walking with a white plastic bag in her right hand. she has a green sweater and light blue jeans on",
    "an older man with gray hair wearing a light brown coat and dark trousers , he is holding an umbrella",
    "the girl wears a yellow dress with black dots and red shoes. she has a small black purse over her shoulder.",
    "a man with a bald head wearing a green army jacket , black pants and brown leather boots .",
    "this woman has shoulder-length brown hair. she is dressed in a beige trench coat, black tights and black heels.",
    "a person in a dark blue jacket and black pants riding a bicycle. he wears a white helmet.",
    "the young man wears a red baseball cap, a white short-sleeved shirt and grey shorts. he has a blue backpack.",
    "a woman with her hair tied back in a bun. she wears a black leather jacket, a white top and blue ripped jeans.",
    "man with black hair wearing a checked shirt with the sleeves rolled up, beige trousers and brown shoes",
    "she is wearing sunglasses, a purple sweater, a black skirt and black boots, and carrying a white tote bag.",
    "the man has short black hair and wears a dark grey suit with a white shirt and black shoes. he carries a "
    "black briefcase.",
    "a woman in a long black coat, black pants and white sneakers is standing and looking at her phone.",
    "the boy is wearing an orange jersey with yellow stripes and black shorts. he has white sneakers on.",
    "a middle-aged woman in a floral blouse and dark trousers, carrying a brown handbag in her left hand.",
    "this man is wearing a blue t-shirt with white letters on the front, black jeans and grey sneakers.",
    "a lady wearing a white hat, a light pink cardigan over a white dress, and beige flat shoes.",
    "the pedestrian wears a black hoodie, black sweatpants and red sneakers; his hood is down and he has a black bag.",
    "a tall man in a navy blue windbreaker and blue jeans, with a black messenger bag across his body.",
    "the woman has long blonde hair and is wearing a red coat, blue jeans and black ankle boots.",
    "a man wearing black glasses, a white shirt, dark pants and black leather shoes walks with a phone in his hand.",
    "she has long curly hair and wears a green parka, grey leggings and white running shoes. she carries a pink "
    "backpack.",
)
