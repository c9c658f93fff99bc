"""Prefect flows: one per stage (curate, validate, version, pretrain, finetune, evaluate) and the parent pipeline.

Flows only orchestrate; every task calls a function of the ``gadms`` package,
which holds the logic. This package is the only place that imports Prefect.
"""
