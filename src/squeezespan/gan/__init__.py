"""GAN training: our StyleGAN2 teacher trained with StyleGAN2-ADA's objectives (`sns train-gan`).

``train`` owns the training loop and its knobs (GAN_DEFAULTS); ``loss`` the objectives (non-saturating logistic
loss, lazy R1, generator EMA, lazy-regularised Adam). The trained teacher is a teacher directory
(teachers.directory); the augmentation is data.diffaug.
"""

from .train import GAN_DEFAULTS, train_gan

__all__ = ["GAN_DEFAULTS", "train_gan"]
