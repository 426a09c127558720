"""squeezespan: distil image representations from a GAN generator (Squeeze and Span, NeurIPS 2022).

The public API; the `sns` command line is squeezespan.cli.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import resolve_config
from .data import Augment, AugmentConfig, ImageDataset, batches, dataset_info, load_dataset, normalize
from .engine import RealStream, RunDir, fit
from .errors import SnsError
from .eval import evaluate, extract_features, knn_eval, linear_probe, linear_probe_augmented
from .export import export_backbone, load_backbone, read_meta, torchvision_resnet
from .gan import train_gan
from .hub import export_hub
from .manifest import write_manifest
from .methods import METHODS, Objective, SqueezeAndSpan, StepInputs, Supervised
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
    "write_manifest",
    "METHODS",
    "Objective",
    "StepInputs",
    "SqueezeAndSpan",
    "Supervised",
    "fit",
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
