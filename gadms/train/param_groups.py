"""Learning-rate groups of the optimiser: one rate for every parameter, or IRRA's released rule.

IRRA's fine-tuning (``finetune.head_lr_factor: 5``, ``bias_lr_factor: 2``, ``bias_weight_decay: 0``) trains
the cross-modal encoder at 5x the learning rate, every bias at 2x without weight decay, and the identity
classifier and MLM head at 5x (their biases too, still without weight decay). Written from the rule's
description (issue 22); the rule's order is kept: encoder, then bias, then classifier and head. IRRA's
encoder keys are those holding ``cross`` (its cross-attention and transformer); its input and output layer
norms stay at the base rate, as do ours (``interaction.ln_*``). The ``project`` encoder's input layers have
no counterpart in IRRA and count as encoder.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from torch import nn

HEADS = ("classifier.", "interaction.head.")  # IRRA's classifier and mlm_head
ENCODER = "interaction."
ENCODER_NORMS = "interaction.ln_"  # IRRA's ln_pre_t, ln_pre_i, ln_post: no "cross" in their names


@dataclass(frozen=True)
class GroupRule:
    """How each parameter's learning rate and weight decay follow from the optimiser's.

    Attributes:
        head_lr_factor: the cross-modal encoder, the MLM head and the identity classifier.
        bias_lr_factor: every bias outside the heads.
        bias_weight_decay: every bias's weight decay; None: the optimiser's.
    """

    head_lr_factor: float = 1.0
    bias_lr_factor: float = 1.0
    bias_weight_decay: float | None = None

    @property
    def uniform(self) -> bool:
        """Whether every parameter gets the optimiser's own rate and decay (one group)."""
        return self.head_lr_factor == 1.0 and self.bias_lr_factor == 1.0 and self.bias_weight_decay is None


def factor_and_decay(name: str, rule: GroupRule, weight_decay: float) -> tuple[float, float]:
    """The ``(lr factor, weight decay)`` of the parameter called ``name`` (a ``named_parameters`` name)."""
    factor, decay = 1.0, weight_decay
    if name.startswith(ENCODER) and not name.startswith(ENCODER_NORMS):
        factor = rule.head_lr_factor
    if "bias" in name.rsplit(".", 1)[-1]:  # IRRA: "bias" in the key (in_proj_bias too)
        factor = rule.bias_lr_factor
        decay = weight_decay if rule.bias_weight_decay is None else rule.bias_weight_decay
    if name.startswith(HEADS):
        factor = rule.head_lr_factor
    return factor, decay


def param_groups(
    model: nn.Module, lr: float, weight_decay: float, rule: GroupRule
) -> Iterable[nn.Parameter] | list[dict[str, Any]]:
    """What to hand the optimiser: the parameters themselves (uniform rule), or one group per (lr, decay).

    Args:
        model: the model.
        lr: the optimiser's learning rate.
        weight_decay: the optimiser's weight decay.
        rule: the factors.

    Returns:
        ``model.parameters()``, or groups ``{"params", "lr", "weight_decay"}`` in first-parameter order.
    """
    if rule.uniform:
        return model.parameters()
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            groups.setdefault(factor_and_decay(name, rule, weight_decay), []).append(parameter)
    return [{"params": ps, "lr": lr * factor, "weight_decay": decay} for (factor, decay), ps in groups.items()]
