"""GAN training: our StyleGAN2 teacher trained with StyleGAN2-ADA's objectives (`sns train-gan`).

``config`` owns the knobs (GAN_DEFAULTS) and their checks; ``state`` the run's networks, optimisers, data
order and counters; ``steps`` one iteration; ``train`` the loop between iterations and ``train_gan``;
``loss`` the objectives (non-saturating logistic loss, lazy R1, generator EMA, lazy-regularised Adam).
The trained teacher is a teacher directory (teachers.directory); the augmentation is data.diffaug.
"""

from .config import GAN_DEFAULTS
from .train import train_gan

__all__ = ["GAN_DEFAULTS", "train_gan"]
