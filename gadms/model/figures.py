"""Token-score figure: caption words coloured by their GASS score.

Low-scoring words (red) are what the model treats as noise and masks for the
alignment loss; high-scoring words (green) are what it masks for masked-token
prediction. Words of known-wrong spans can be underlined.

Drawn on a bare :class:`matplotlib.figure.Figure` with an Agg canvas (no pyplot, no backend chosen at import):
it renders the same with or without a display.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from gadms.model.backbone import EOT_TOKEN_ID, SOT_TOKEN_ID


def word_scores(token_ids: list[int], scores: list[float], decoder: dict[int, str]) -> list[tuple[str, float]]:
    """Merge BPE pieces into words (a piece ending in ``</w>`` closes a word); a word scores its pieces' mean."""
    words: list[tuple[str, float]] = []
    pieces: list[str] = []
    values: list[float] = []
    for tid, score in zip(token_ids, scores):
        if tid in (SOT_TOKEN_ID, 0):
            continue
        if tid == EOT_TOKEN_ID:
            break
        piece = decoder.get(tid, "?")
        pieces.append(piece.replace("</w>", ""))
        values.append(float(score))
        if piece.endswith("</w>"):
            words.append(("".join(pieces), sum(values) / len(values)))
            pieces, values = [], []
    if pieces:
        words.append(("".join(pieces), sum(values) / len(values)))
    return words


def token_score_figure(
    tokens: torch.Tensor,
    scores: torch.Tensor,
    decoder: dict[int, str],
    path: Path,
    wrong_words: list[set[int]] | None = None,
    title: str = "GASS token scores",
) -> Path:
    """Draw one row per caption, each word on a background coloured by its score.

    Args:
        tokens: ``(B, N)`` token ids.
        scores: ``(B, N)`` scores in [0, 1].
        decoder: token id -> BPE string (the tokenizer's ``decoder``).
        path: PNG to write.
        wrong_words: per caption, indices of words known to be wrong (drawn underlined, in bold).
        title: figure title.

    Returns:
        ``path``.
    """
    rows = [word_scores(t.tolist(), s.tolist(), decoder) for t, s in zip(tokens, scores)]
    cmap = matplotlib.colormaps["RdYlGn"]
    line_height = 0.42
    lines: list[list[tuple[str, float, bool]]] = []
    for r, words in enumerate(rows):
        wrong = wrong_words[r] if wrong_words else set()
        current: list[tuple[str, float, bool]] = []
        width = 0
        for w, (word, score) in enumerate(words):
            if width + len(word) > 70 and current:
                lines.append(current)
                current, width = [], 0
            current.append((word, score, w in wrong))
            width += len(word) + 1
        lines.append(current)
        lines.append([])  # gap between captions
    fig_h = 0.9 + line_height * len(lines)
    fig = Figure(figsize=(11, fig_h))
    canvas = FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.set_xlim(0, 1)
    ax.set_ylim(0, len(lines) * line_height)
    ax.axis("off")
    canvas.draw()
    renderer = canvas.get_renderer()
    for i, line in enumerate(lines):
        y = (len(lines) - i - 0.5) * line_height
        x = 0.005
        for word, score, is_wrong in line:
            text = ax.text(
                x,
                y,
                word,
                fontsize=11,
                va="center",
                ha="left",
                fontweight="bold" if is_wrong else "normal",
                parse_math=False,  # caption words are text, never $math$
                bbox={
                    "facecolor": cmap(score),
                    "edgecolor": "black" if is_wrong else "none",
                    "boxstyle": "round,pad=0.2",
                },
            )
            box = text.get_window_extent(renderer=renderer).transformed(ax.transData.inverted())
            x = box.x1 + 0.008
    sm = ScalarMappable(cmap=cmap, norm=Normalize(0, 1))
    fig.colorbar(
        sm,
        ax=ax,
        orientation="horizontal",
        fraction=0.04,
        pad=0.02,
        label="score (low: treated as noise, high: informative)",
    )
    heading = title + ("  (outlined: known-wrong words)" if wrong_words else "")
    ax.set_title(heading, fontsize=12, parse_math=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    return path
