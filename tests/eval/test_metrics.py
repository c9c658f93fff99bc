"""Retrieval metrics against a plain per-query reference, on hand-worked and random rankings."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gadms.eval import metrics, retrieval_metrics, retrieval_metrics_from_features

KS = (1, 5, 10)


def reference_metrics(similarity, query_ids, gallery_ids, ks=KS) -> dict[str, float]:
    """Rank every gallery item of every query explicitly, then apply the definitions.

    Order: similarity descending; on ties, negatives before positives, then gallery index.
    """
    similarity = np.asarray(similarity, dtype=np.float64)
    gallery_ids = np.asarray(gallery_ids)
    per_query = []
    for q, identity in enumerate(np.asarray(query_ids)):
        positive = gallery_ids == identity
        if not positive.any():
            continue
        ranking = sorted(range(len(gallery_ids)), key=lambda j: (-similarity[q, j], bool(positive[j]), j))
        ranks = [rank for rank, j in enumerate(ranking, start=1) if positive[j]]
        average_precision = np.mean([found / rank for found, rank in enumerate(ranks, start=1)])
        per_query.append([ranks[0] <= k for k in ks] + [average_precision, len(ranks) / ranks[-1]])
    means = 100 * np.mean(per_query, axis=0)
    return dict(zip([f"R{k}" for k in ks] + ["mAP", "mINP"], means.tolist()))


def random_case(seed: int, num_queries: int, num_gallery: int, identities: int, levels: int):
    """Similarities on a few levels (many ties); some query identities absent from the gallery."""
    g = torch.Generator().manual_seed(seed)
    similarity = torch.randint(levels, (num_queries, num_gallery), generator=g) / levels
    gallery_ids = torch.randint(identities, (num_gallery,), generator=g)
    query_ids = torch.randint(identities + 2, (num_queries,), generator=g)
    query_ids[0] = gallery_ids[0]  # at least one query has a positive
    return similarity, query_ids, gallery_ids


CASES = {
    "heavy ties": (0, 30, 40, 6, 4),
    "few ties": (1, 25, 60, 20, 1000),
    "many positives (sorting path)": (2, 12, 320, 2, 7),
    "one by one": (3, 1, 1, 1, 2),
    "wide gallery": (4, 9, 300, 60, 50),
}


def assert_close(actual: dict, expected: dict, tolerance: float = 1e-9):
    assert actual.keys() == expected.keys()
    for name in expected:
        assert actual[name] == pytest.approx(expected[name], abs=tolerance), name


def test_two_queries_by_hand():
    # gallery identities 0 1 0 2
    # query 0 (id 0): order g3 g0 g1 g2 -> positives at ranks 2, 4:
    #   not in top 1; AP = (1/2 + 2/4) / 2 = 0.5; INP = 2/4 = 0.5
    # query 1 (id 1): g1 first -> rank 1: hit everywhere, AP = INP = 1
    # means: R1 50, R5 100, R10 100, mAP 75, mINP 75
    similarity = torch.tensor([[0.9, 0.8, 0.1, 0.95], [0.2, 0.7, 0.3, 0.1]])
    result = retrieval_metrics(similarity, torch.tensor([0, 1]), torch.tensor([0, 1, 0, 2]))
    assert result == pytest.approx({"R1": 50.0, "R5": 100.0, "R10": 100.0, "mAP": 75.0, "mINP": 75.0})


def test_ties_count_against_the_query_and_queries_without_positives_are_left_out():
    # gallery identities 1 0 0 1; query 0 (id 0) ties its positives g1, g2 with negative g0 at 0.5
    # -> g0 ranks first, positives at ranks 2, 3: R1 0, R2 100, AP = (1/2 + 2/3) / 2 = 7/12, INP = 2/3
    # query 1 has id 7, absent from the gallery: not counted
    similarity = torch.tensor([[0.5, 0.5, 0.5, 0.2], [1.0, 1.0, 1.0, 1.0]])
    result = retrieval_metrics(similarity, torch.tensor([0, 7]), torch.tensor([1, 0, 0, 1]), ks=(1, 2))
    assert result == pytest.approx({"R1": 0.0, "R2": 100.0, "mAP": 100 * 7 / 12, "mINP": 100 * 2 / 3})


def test_a_constant_similarity_scores_the_worst_case():
    # 2 positives among 10 items, all tied: ranks 9 and 10
    gallery_ids = torch.tensor([5, 5, 0, 1, 2, 3, 4, 6, 7, 8])
    result = retrieval_metrics(torch.zeros(1, 10), torch.tensor([5]), gallery_ids)
    assert result == pytest.approx(
        {"R1": 0.0, "R5": 0.0, "R10": 100.0, "mAP": 100 * (1 / 9 + 2 / 10) / 2, "mINP": 20.0}
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_matches_the_reference(case):
    similarity, query_ids, gallery_ids = random_case(*case)
    assert_close(
        retrieval_metrics(similarity, query_ids, gallery_ids), reference_metrics(similarity, query_ids, gallery_ids)
    )


@pytest.mark.parametrize("case", CASES.values(), ids=CASES.keys())
def test_chunks_blocks_and_sorting_do_not_change_the_result(case, monkeypatch):
    similarity, query_ids, gallery_ids = random_case(*case)
    whole = retrieval_metrics(similarity, query_ids, gallery_ids)
    assert_close(retrieval_metrics(similarity, query_ids, gallery_ids, chunk=7), whole)
    monkeypatch.setattr(metrics, "_BUDGET", {"cpu": 1})  # one row per block
    monkeypatch.setattr(metrics, "_COPY_BUDGET", 1)  # and per copied piece
    assert_close(retrieval_metrics(similarity, query_ids, gallery_ids, chunk=7), whole)
    monkeypatch.setattr(metrics, "_SORT_ABOVE", 0)  # rank every row by sorting it
    assert_close(retrieval_metrics(similarity, query_ids, gallery_ids), whole)


def test_float16_and_numpy_inputs():
    similarity, query_ids, gallery_ids = random_case(5, 40, 70, 10, 1000)
    half = similarity.half()  # rounding to float16 makes more ties
    expected = reference_metrics(half.float(), query_ids, gallery_ids)
    assert_close(retrieval_metrics(half, query_ids, gallery_ids, chunk=7), expected)
    assert_close(retrieval_metrics(half.numpy(), query_ids.numpy(), gallery_ids.numpy()), expected)


def test_float64_scores_and_other_ks():
    g = torch.Generator().manual_seed(6)
    similarity = torch.randn(50, 80, generator=g, dtype=torch.float64)
    query_ids, gallery_ids = torch.randint(15, (50,), generator=g), torch.randint(15, (80,), generator=g)
    ks = (1, 2, 3, 100)
    assert_close(
        retrieval_metrics(similarity, query_ids, gallery_ids, ks=ks),
        reference_metrics(similarity, query_ids, gallery_ids, ks),
    )


def test_from_features_equals_the_matrix():
    g = torch.Generator().manual_seed(7)
    queries, gallery = torch.randn(37, 16, generator=g), torch.randn(23, 16, generator=g)
    query_ids, gallery_ids = torch.randint(8, (37,), generator=g), torch.randint(8, (23,), generator=g)
    similarity = F.normalize(queries, dim=1) @ F.normalize(gallery, dim=1).T
    expected = retrieval_metrics(similarity, query_ids, gallery_ids)
    assert_close(retrieval_metrics_from_features(queries, gallery, query_ids, gallery_ids, chunk=5), expected)
    assert_close(
        retrieval_metrics_from_features(queries.numpy(), gallery.numpy(), query_ids.numpy(), gallery_ids.numpy()),
        expected,
    )


def test_cpu_and_device_counting_agree():
    # on CPU the counts come from numpy; any other device uses the torch formula, checked here on CPU
    g = torch.Generator().manual_seed(9)
    block = torch.randint(9, (6, 1001), generator=g).float()
    limits = torch.randint(10, (6, 3), generator=g).float()
    expected = (block[:, None, :] >= limits[:, :, None]).long().sum(-1)
    assert torch.equal(metrics._count_block_numpy(block, limits), expected)
    assert torch.equal(metrics._count_block_torch(block, limits), expected)


@pytest.mark.parametrize(
    ("similarity", "query_ids", "gallery_ids", "message"),
    [
        (torch.rand(2, 3), [5, 6], [0, 1, 2], "no query has a gallery item"),
        (torch.rand(2, 0), [5, 6], [], "no query has a gallery item"),
        (torch.rand(2, 3), [0, 1], [0, 1], "do not match"),
        (torch.tensor([[float("nan"), 0.0]]), [0], [0, 1], "not finite"),
    ],
)
def test_invalid_inputs_raise(similarity, query_ids, gallery_ids, message):
    with pytest.raises(ValueError, match=message):
        retrieval_metrics(similarity, torch.tensor(query_ids), torch.tensor(gallery_ids, dtype=torch.long))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_cuda_matches_cpu():
    similarity, query_ids, gallery_ids = random_case(8, 300, 500, 40, 20)
    expected = retrieval_metrics(similarity, query_ids, gallery_ids)
    assert_close(retrieval_metrics(similarity.cuda().half(), query_ids, gallery_ids), expected)
    queries, gallery = torch.randn(60, 8), torch.randn(90, 8)
    ids_q, ids_g = torch.randint(10, (60,)), torch.randint(10, (90,))
    assert_close(
        retrieval_metrics_from_features(queries.cuda(), gallery.cuda(), ids_q, ids_g),
        retrieval_metrics_from_features(queries, gallery, ids_q, ids_g),
        1e-6,
    )
