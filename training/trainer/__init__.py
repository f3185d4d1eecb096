"""Headless trainer of ImpliCity networks (``implicity train``); never imports QGIS."""
from .config import TrainConfig, load_train_config, train_config_from_dict
from .loop import Progress, Trainer, seed_everything
from .loss import weighted_bce_with_logits
from .session import run_training

__all__ = ["TrainConfig", "load_train_config", "train_config_from_dict", "Progress", "Trainer",
           "seed_everything", "weighted_bce_with_logits", "run_training"]
