"""Typed, validated parameters loaded from params.yaml.

Every section of params.yaml maps to a frozen pydantic model. Loading fails
with a :class:`ConfigError` whose message is one line naming the offending key,
e.g. ``params.yaml: model.masking.alpha_noise: must be <= 1 (got 1.5)``.
Parameter files are read by :mod:`gadms.safe_yaml` (size, nesting and alias
limits, no duplicate keys), and no number may be infinite or NaN. Rules across keys (attention heads divide
the width, image sides a multiple of the patch size, batches that split evenly, MLflow's name and alias rules,
IANA time zones) run on the whole (:data:`WHOLE_RULES`, section validators), each a line naming its keys. This
package imports nothing else from ``gadms`` but the YAML reader and, for the secret check, the credential finder.

The schema is the one source of the defaults and of each key's explanation (the fields' descriptions);
params.yaml is written from it by :mod:`gadms.config.render` (``make params``). The modules, by concept:

- :mod:`~gadms.config.base`: the section base, :class:`ConfigError`, seeds, the shapes the rules use;
- :mod:`~gadms.config.data`: paths, the synthetic world, curation, the caption quality gate;
- :mod:`~gadms.config.learning`: the model, losses, pre-training, fine-tuning, augmentation, evaluation;
- :mod:`~gadms.config.operations`: MLflow tracking, DVC versioning, Prefect orchestration, the main job;
- :mod:`~gadms.config.ablation`: the ``gadms ablate`` testbed;
- :mod:`~gadms.config.params`: :class:`Params`, the whole, and the rules across its sections;
- :mod:`~gadms.config.loading`: files, ``--set`` overrides, one-line errors, :func:`flatten`;
- :mod:`~gadms.config.render`: params.yaml's text from the schema.
"""

from gadms.config.ablation import (
    AblateBaseConfig,
    AblateCeilingConfig,
    AblateConfig,
    AblateCorpusConfig,
    AblationRow,
)
from gadms.config.base import (
    BACKBONE_SHAPES,
    CLIP_CONTEXT,
    DEVICE_NAME,
    MAX_SEED,
    MLFLOW_ALIAS,
    MLFLOW_NAME_CHARS,
    MLFLOW_VERSION_ALIAS,
    ConfigError,
    Section,
    Seed,
    SplitFractions,
)
from gadms.config.data import (
    CaptioningConfig,
    CropConfig,
    CurationConfig,
    DetectorConfig,
    FilterConfig,
    MostlyConfig,
    PathsConfig,
    SourceConfig,
    SynthConfig,
    TemplatesConfig,
    ValidationConfig,
)
from gadms.config.learning import (
    AugmentConfig,
    Benchmark,
    EvalConfig,
    FinetuneConfig,
    GassConfig,
    InteractionConfig,
    LossConfig,
    LossTerm,
    MaskingConfig,
    ModelConfig,
    OptimizerConfig,
    StreamConfig,
    TicTerm,
    TrainConfig,
)
from gadms.config.loading import (
    DEFAULT_PARAMS,
    MAX_PARAMS_BYTES,
    PARAMS_READ_TIMEOUT_S,
    apply_overrides,
    flatten,
    load_params,
    params_from_dict,
    parse_override,
    read_yaml,
)
from gadms.config.operations import (
    OrchestrationConfig,
    PipelineConfig,
    TrackingConfig,
    VersioningConfig,
    mlflow_alias_problem,
    mlflow_model_name_problem,
    valid_time_zone,
)
from gadms.config.params import WHOLE_RULES, Params
from gadms.config.render import render_params

__all__ = [
    "BACKBONE_SHAPES",
    "CLIP_CONTEXT",
    "DEFAULT_PARAMS",
    "DEVICE_NAME",
    "MAX_PARAMS_BYTES",
    "MAX_SEED",
    "MLFLOW_ALIAS",
    "MLFLOW_NAME_CHARS",
    "MLFLOW_VERSION_ALIAS",
    "PARAMS_READ_TIMEOUT_S",
    "WHOLE_RULES",
    "AblateBaseConfig",
    "AblateCeilingConfig",
    "AblateConfig",
    "AblateCorpusConfig",
    "AblationRow",
    "AugmentConfig",
    "Benchmark",
    "CaptioningConfig",
    "ConfigError",
    "CropConfig",
    "CurationConfig",
    "DetectorConfig",
    "EvalConfig",
    "FilterConfig",
    "FinetuneConfig",
    "GassConfig",
    "InteractionConfig",
    "LossConfig",
    "LossTerm",
    "MaskingConfig",
    "ModelConfig",
    "MostlyConfig",
    "OptimizerConfig",
    "OrchestrationConfig",
    "Params",
    "PathsConfig",
    "PipelineConfig",
    "Section",
    "Seed",
    "SourceConfig",
    "SplitFractions",
    "StreamConfig",
    "SynthConfig",
    "TemplatesConfig",
    "TicTerm",
    "TrackingConfig",
    "TrainConfig",
    "ValidationConfig",
    "VersioningConfig",
    "apply_overrides",
    "flatten",
    "load_params",
    "mlflow_alias_problem",
    "mlflow_model_name_problem",
    "params_from_dict",
    "parse_override",
    "read_yaml",
    "render_params",
    "valid_time_zone",
]
