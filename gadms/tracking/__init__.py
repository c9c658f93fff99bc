"""Experiment tracking and the model registry (MLflow).

Modules, each importable on its own (nothing here imports MLflow until used):

- :mod:`gadms.tracking.store`: where runs go (tracking URI precedence, the local
  SQLite store, the ``mlflow ui`` command that opens it).
- :mod:`gadms.tracking.mlflow_run`: :func:`~gadms.tracking.mlflow_run.tracked_run`, one
  MLflow run with every parameter, provenance tags and logging helpers.
- :mod:`gadms.tracking.provenance`: the provenance tags (stage, DVC hash, git commit and dirty flag).
- :mod:`gadms.tracking.redact`: keeps API keys out of everything logged.
- :mod:`gadms.tracking.examples`: evaluation that also returns each query's top-k.
- :mod:`gadms.tracking.figures`: retrieval-example figures.
- :mod:`gadms.tracking.pyfunc`: the model as an MLflow pyfunc (text or image in, embeddings out).
- :mod:`gadms.tracking.registry`: register a version, promote the champion alias on R1.
- :mod:`gadms.tracking.tracked_training`: tracked pre-training and fine-tuning + evaluation,
  the calls the CLI and the flows make.
- :mod:`gadms.tracking.pipeline_stages`: the pipeline's stages one call each, typed in and out
  (:mod:`gadms.results`): training here or under torchrun, evaluation, promotion.
- :mod:`gadms.tracking.pipeline_run`: the pipeline's MLflow parent run, its links, results table,
  headline metrics and the unchanged-inputs check.
"""
