"""Next-embedding prediction ("LVM") in torch: models, losses (reference + corrected), trainer, baselines."""

from reprolab.models.lvm.baselines import BASELINES, baseline_scores, mean_cosine, row_cosines
from reprolab.models.lvm.losses import (
    LossWeights,
    compose_loss,
    info_nce,
    moment_loss,
    mse_loss,
    variance_loss,
)
from reprolab.models.lvm.models import (
    AMN,
    MODELS,
    CausalTransformer,
    GRUStack,
    LSTMPredictor,
    Prediction,
    build_model,
)
from reprolab.models.lvm.trainer import (
    TrainConfig,
    TrainResult,
    evaluate,
    fit,
    load_checkpoint,
    predict,
    save_checkpoint,
)

__all__ = [
    "AMN", "BASELINES", "MODELS", "CausalTransformer", "GRUStack", "LSTMPredictor", "LossWeights", "Prediction",
    "TrainConfig", "TrainResult", "baseline_scores", "build_model", "compose_loss", "evaluate", "fit", "info_nce",
    "load_checkpoint", "mean_cosine", "moment_loss", "mse_loss", "predict", "row_cosines", "save_checkpoint",
    "variance_loss",
]
