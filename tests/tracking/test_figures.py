"""Retrieval-example figures and the evaluation that produces their rankings."""

import numpy as np
import pytest
import torch
from matplotlib.colors import to_rgba

from gadms.data.benchmarks import load_benchmark
from gadms.eval.evaluate import evaluate_split
from gadms.tracking.examples import evaluate_with_examples, example_query_indices, top_k_examples
from gadms.tracking.figures import CORRECT_COLOUR, WRONG_COLOUR, retrieval_examples_figure


def _frame_colours(figure):
    return [to_rgba(axes.spines["top"].get_edgecolor()) for axes in figure.axes]


def test_figure_frames_correct_images_green_and_wrong_ones_red(bench_root):
    split = load_benchmark("cuhk-pedes", bench_root, "test")
    images = [split.images[0], split.images[1].read_bytes(), np.full((128, 64, 3), 200, np.uint8)] * 3 + [
        split.images[2]
    ]
    correct = [True, False, False, True, False, False, False, False, True, False]
    figure = retrieval_examples_figure("a man in a red shirt", images, correct, "direct, cuhk-pedes")
    assert len(figure.axes) == 10
    assert _frame_colours(figure) == [to_rgba(CORRECT_COLOUR if c else WRONG_COLOUR) for c in correct]
    assert "a man in a red shirt" in figure._suptitle.get_text()
    figure.canvas.draw()  # renders without a display


def test_figure_rejects_flags_that_do_not_match_the_images():
    with pytest.raises(ValueError, match="one correct flag per ranked image"):
        retrieval_examples_figure("q", [np.zeros((4, 4, 3), np.uint8)], [True, False])


def test_example_queries_spread_over_the_split():
    assert example_query_indices(100, 4) == [0, 33, 66, 99]
    assert example_query_indices(2, 4) == [0, 1]
    assert example_query_indices(0, 4) == []


def test_top_k_ranks_by_cosine_and_flags_same_identity():
    class Split:  # gallery: 4 images of identities 0, 1, 0, 2; one query of identity 0
        def gallery(self):
            return ["a", "b", "c", "d"], [0, 1, 0, 2]

        def queries(self):
            return ["q0"], [0]

    gallery = torch.nn.functional.normalize(torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0], [0.6, 0.8]]), dim=1)
    query = torch.tensor([[0.0, 1.0]])
    (example,) = top_k_examples(query, gallery, Split(), [0], k=3)
    assert example.images == ["c", "d", "b"]
    assert example.correct == [True, False, False]


def test_metrics_match_evaluate_split_and_examples_are_ranked(bench_root, tiny_model):
    split = load_benchmark("cuhk-pedes", bench_root, "test")
    result = evaluate_with_examples(tiny_model, split, examples=3, k=10)
    assert result.metrics == pytest.approx(evaluate_split(tiny_model, split))
    assert [e.query_index for e in result.examples] == example_query_indices(len(split.captions), 3)
    for example in result.examples:
        assert len(example.images) == min(10, len(split.images))
        assert example.correct == [
            split.image_ids[g] == split.caption_ids[example.query_index] for g in example.gallery_indices
        ]
