"""Models trained on volunteer votes: image question heads and the spectrum CNN."""

from mlcore.models.image import (
    BACKBONE_NAME,
    BackboneConfig,
    ImageBackbone,
    QuestionHead,
    preprocess_cutouts,
)
from mlcore.models.spectrum import SpectrumCNN, SpectrumInputConfig, preprocess_spectrum

__all__ = [
    "BACKBONE_NAME",
    "BackboneConfig",
    "ImageBackbone",
    "QuestionHead",
    "SpectrumCNN",
    "SpectrumInputConfig",
    "preprocess_cutouts",
    "preprocess_spectrum",
]
