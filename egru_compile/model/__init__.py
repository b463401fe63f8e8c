"""PyTorch EGRU model (EvNN layout)."""
from .egru import (DEFAULT_PROJECTION_ACTIVATION, LEGACY_PROJECTION_ACTIVATION, PROJECTION_ACTIVATIONS, EGRUConfig,
                   EGRULanguageModel, EGRULayer, SpikeFunction, StepModule, TiedDecoder, heaviside, projection_line)

__all__ = ["DEFAULT_PROJECTION_ACTIVATION", "LEGACY_PROJECTION_ACTIVATION", "PROJECTION_ACTIVATIONS", "EGRUConfig",
           "EGRULanguageModel", "EGRULayer", "SpikeFunction", "StepModule", "TiedDecoder", "heaviside",
           "projection_line"]
