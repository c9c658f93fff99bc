"""The synthetic person world: the project's built-in data for the demo and the tests.

Clothed 2-D figures drawn from attribute sets, with exact boxes and COCO
keypoints, written as img2dataset-style web shards (:mod:`gadms.synth.web`) or
as a CUHK-PEDES-format retrieval benchmark (:mod:`gadms.synth.benchmark`).
"""
