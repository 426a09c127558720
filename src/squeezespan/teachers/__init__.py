"""Teachers: our StyleGAN2 (G, D) with the official names, and the Teacher wrapper that taps generator features."""

from .stylegan2 import Discriminator, Generator, build_stylegan2
from .teacher import DEFAULT_TAPS, Teacher, load_weights

__all__ = ["DEFAULT_TAPS", "Discriminator", "Generator", "Teacher", "build_stylegan2", "load_weights"]
