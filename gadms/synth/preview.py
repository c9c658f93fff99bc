"""Preview figures (PNG) of what the synthetic world wrote, for a quick visual check."""

from __future__ import annotations

import json
import tarfile
import textwrap
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from gadms.safe_files import decode_image, open_image_file, open_regular

_DECISION_COLORS = {"keep": (40, 220, 60)}
_REJECT_COLOR = (235, 50, 50)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow built without FreeType
        return ImageFont.load_default()


def _save(canvas: Image.Image, path: Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")
    return path


def web_preview(shard_dir: Path, path: Path, count: int = 6, columns: int = 3) -> Path:
    """Draw the first ``count`` scenes of ``shard_dir`` with boxes, decisions and keypoints.

    Green boxes pass the SPEC section-2 filters, red ones are labelled with the
    rule they fail; keypoints are green when visible, orange when covered.
    """
    samples: dict[str, dict[str, bytes]] = {}
    for shard in sorted(Path(shard_dir).glob("*.tar")):
        with open_regular(shard, shard_dir) as handle, tarfile.open(fileobj=handle) as tar:  # one way in
            for member in tar.getmembers():
                key, _, ext = member.name.partition(".")
                data = tar.extractfile(member)
                if data is not None:
                    samples.setdefault(key, {})[ext] = data.read()
        if len(samples) >= count:
            break
    keys = sorted(samples)[:count]
    if not keys:
        raise FileNotFoundError(f"{shard_dir}: no samples to preview")
    tiles = []
    font = _font(14)
    for key in keys:
        image = decode_image(samples[key]["jpg"], f"{shard_dir}: sample {key}")
        meta = json.loads(samples[key]["json"])
        draw = ImageDraw.Draw(image)
        for person in meta["synthetic"]["people"]:
            if person["box"] is None:
                continue
            color = _DECISION_COLORS.get(person["expected"], _REJECT_COLOR)
            draw.rectangle(person["box"], outline=color, width=3)
            draw.text((person["box"][0] + 4, max(0, person["box"][1]) + 2), person["expected"], fill=color, font=font)
            for x, y, v in person["keypoints"]:
                if v > 0:
                    draw.ellipse([x - 3, y - 3, x + 3, y + 3], fill=(40, 220, 60) if v == 2 else (255, 150, 0))
        draw.text((6, image.height - 20), f"{key}: {meta['caption'][:60]}", fill=(255, 255, 255), font=font)
        tiles.append(image)
    w, h = tiles[0].size
    rows = (len(tiles) + columns - 1) // columns
    canvas = Image.new("RGB", (w * min(columns, len(tiles)), h * rows), (255, 255, 255))
    for k, tile in enumerate(tiles):
        canvas.paste(tile, ((k % columns) * w, (k // columns) * h))
    return _save(canvas, path)


def benchmark_preview(root: Path, path: Path, count: int = 8) -> Path:
    """Draw the first ``count`` images of a synthetic CUHK-PEDES folder with their captions.

    Words known to be wrong (``--caption-noise``) are shown in red.
    """
    root = Path(root)
    records = json.loads((root / "reid_raw.json").read_text(encoding="utf-8"))
    truth_file = root / "synthetic_truth.json"
    truth = json.loads(truth_file.read_text(encoding="utf-8"))["records"] if truth_file.exists() else []
    noisy_first = sorted(range(len(records)), key=lambda i: 0 if truth and any(truth[i]["noise_spans"]) else 1)
    picks = sorted(noisy_first[:count])
    font = _font(13)
    tile_w, img_h, text_h = 300, 256, 170
    canvas = Image.new("RGB", (tile_w * len(picks), img_h + text_h), (255, 255, 255))
    draw = ImageDraw.Draw(canvas)
    for k, i in enumerate(picks):
        record = records[i]
        image = open_image_file(root / "imgs" / record["file_path"], root)
        image.thumbnail((tile_w - 10, img_h - 10))
        canvas.paste(image, (k * tile_w + (tile_w - image.width) // 2, 5))
        y = img_h
        draw.text((k * tile_w + 5, y), f"id {record['id']} ({record['split']})", fill=(0, 0, 0), font=font)
        y += 16
        for c, caption in enumerate(record["captions"]):
            spans = truth[i]["noise_spans"][c] if truth else []
            color = (200, 0, 0) if spans else (30, 30, 30)
            for line in textwrap.wrap(caption, 44)[:4]:
                draw.text((k * tile_w + 5, y), line, fill=color, font=font)
                y += 15
            if spans:
                wrong = ", ".join(f"{s['wrong']} (is {s['true']})" for s in spans)
                draw.text((k * tile_w + 5, y), f"wrong: {wrong}"[:48], fill=(200, 0, 0), font=font)
                y += 15
            y += 4
    return _save(canvas, path)
