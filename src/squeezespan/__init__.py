"""squeezespan: distil image representations from a GAN generator (Squeeze and Span, NeurIPS 2022).

The public API; the `sns` command line is squeezespan.cli.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import resolve_config
from .data import (
    Augment,
    AugmentConfig,
    ImageDataset,
    as_image_dataset,
    batches,
    dataset_info,
    load_dataset,
    normalize,
)
from .engine import MetricsLogger, RealStream, RunDir, World, begin, fit, lr_at
from .errors import SnsError
from .eval import evaluate, extract_features, knn_eval, linear_probe, linear_probe_augmented
from .export import export_backbone, load_backbone, read_meta, torchvision_resnet
from .gan import GAN_DEFAULTS, train_gan
from .hub import export_hub
from .manifest import write_manifest
from .methods import (
    METHODS,
    LatentEncoding,
    Objective,
    SimSiam,
    SqueezeAndSpan,
    StepInputs,
    Supervised,
    VICReg,
    losses,
)
from .methods.losses import covariance, embedding_std, invariance, negative_cosine, squeeze, variance, vicreg
from .models import Projector, SqueezeModule, build_student
from .pretraining import PRETRAIN_DEFAULTS, Run, build_run, pretrain
from .teachers import Discriminator, Generator, Teacher, build_stylegan2
from .teachers.convert import convert_stylegan2_pickle
from .teachers.load import load_teacher
from .teachers.pickle_import import load_stylegan2_pickle

__all__ = [
    "__version__",
    "SnsError",
    "resolve_config",
    "load_dataset",
    "ImageDataset",
    "as_image_dataset",
    "batches",
    "dataset_info",
    "normalize",
    "Augment",
    "AugmentConfig",
    "build_student",
    "Projector",
    "SqueezeModule",
    "export_backbone",
    "load_backbone",
    "read_meta",
    "torchvision_resnet",
    "export_hub",
    "Teacher",
    "Generator",
    "Discriminator",
    "build_stylegan2",
    "load_teacher",
    "load_stylegan2_pickle",
    "convert_stylegan2_pickle",
    "train_gan",
    "GAN_DEFAULTS",
    "write_manifest",
    "METHODS",
    "Objective",
    "StepInputs",
    "SqueezeAndSpan",
    "Supervised",
    "VICReg",
    "SimSiam",
    "LatentEncoding",
    "losses",
    "invariance",
    "variance",
    "covariance",
    "vicreg",
    "squeeze",
    "negative_cosine",
    "embedding_std",
    "fit",
    "begin",
    "lr_at",
    "World",
    "MetricsLogger",
    "RunDir",
    "RealStream",
    "pretrain",
    "PRETRAIN_DEFAULTS",
    "build_run",
    "Run",
    "evaluate",
    "extract_features",
    "knn_eval",
    "linear_probe",
    "linear_probe_augmented",
]
