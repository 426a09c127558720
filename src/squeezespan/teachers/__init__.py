"""Teachers: our StyleGAN2 (G, D) with the official names, and the Teacher wrapper that taps generator features."""
from squeezespan.teachers.stylegan2 import Discriminator, Generator, build_stylegan2

__all__ = ["Discriminator", "Generator", "build_stylegan2"]
