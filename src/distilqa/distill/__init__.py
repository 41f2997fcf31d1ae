"""Distillation: the TinyBERT intermediate loss and the prediction-layer loss of the seed recipe.

Stages, trainer and CLI arrive with the distillation issue; the losses are here first because
every stage is defined by them.
"""

from distilqa.distill.losses import (
    IntermediateDistiller,
    LayerMap,
    attention_mse,
    hidden_mse,
    prediction_layer_loss,
)

__all__ = ["IntermediateDistiller", "LayerMap", "attention_mse", "hidden_mse", "prediction_layer_loss"]
