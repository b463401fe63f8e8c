"""PyTorch EGRU model (EvNN layout)."""
from .egru import (EGRUConfig, EGRULanguageModel, EGRULayer, SpikeFunction, StepModule, TiedDecoder,
                   heaviside)

__all__ = ["EGRUConfig", "EGRULanguageModel", "EGRULayer", "SpikeFunction", "StepModule", "TiedDecoder",
           "heaviside"]
