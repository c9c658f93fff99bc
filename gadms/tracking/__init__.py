"""Experiment tracking and the model registry (MLflow).

Modules, each importable on its own (nothing here imports MLflow until used):

- :mod:`gadms.tracking.store`: where runs go (tracking URI precedence, the local
  SQLite store, the ``mlflow ui`` command that opens it).
- :mod:`gadms.tracking.mlflow_run`: :func:`~gadms.tracking.mlflow_run.tracked_run`, one
  MLflow run with every parameter, provenance tags and logging helpers.
- :mod:`gadms.tracking.redact`: keeps API keys out of everything logged.
- :mod:`gadms.tracking.examples`: evaluation that also returns each query's top-k.
- :mod:`gadms.tracking.figures`: retrieval-example figures.
- :mod:`gadms.tracking.pyfunc`: the model as an MLflow pyfunc (text or image in, embeddings out).
- :mod:`gadms.tracking.registry`: register a version, promote the champion alias on R1.
- :mod:`gadms.tracking.stages`: tracked pre-training and fine-tuning + evaluation,
  the calls the CLI and the flows make.
"""
