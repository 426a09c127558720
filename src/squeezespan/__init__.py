"""squeezespan: distil image representations from a GAN generator (Squeeze and Span, NeurIPS 2022).

The public API; the `sns` command line is squeezespan.cli.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Each public name, and the module that defines it. They load on first use (PEP 562), so that `import squeezespan`
# costs nothing until a name is used: the `sns` entry point can then answer Ctrl-C during torch's import with one
# line (squeezespan.entry), and `from squeezespan import Teacher` does not load kornia or the CLI.
_EXPORTS = {
    "SnsError": ".errors",
    "resolve_config": ".config",
    "load_dataset": ".data",
    "ImageDataset": ".data",
    "as_image_dataset": ".data",
    "batches": ".data",
    "dataset_info": ".data",
    "normalize": ".data",
    "Augment": ".data",
    "AugmentConfig": ".data",
    "build_student": ".models",
    "Projector": ".models",
    "SqueezeModule": ".models",
    "export_backbone": ".export",
    "load_backbone": ".export",
    "read_meta": ".export",
    "torchvision_resnet": ".export",
    "export_hub": ".hub",
    "Teacher": ".teachers",
    "Generator": ".teachers",
    "Discriminator": ".teachers",
    "build_stylegan2": ".teachers",
    "load_teacher": ".teachers.load",
    "load_stylegan2_pickle": ".teachers.pickle_import",
    "convert_stylegan2_pickle": ".teachers.convert",
    "train_gan": ".gan",
    "GAN_DEFAULTS": ".gan",
    "write_manifest": ".manifest",
    "METHODS": ".methods",
    "Objective": ".methods",
    "StepInputs": ".methods",
    "SqueezeAndSpan": ".methods",
    "Supervised": ".methods",
    "VICReg": ".methods",
    "SimSiam": ".methods",
    "LatentEncoding": ".methods",
    "losses": ".methods",
    "invariance": ".methods.losses",
    "variance": ".methods.losses",
    "covariance": ".methods.losses",
    "vicreg": ".methods.losses",
    "squeeze": ".methods.losses",
    "negative_cosine": ".methods.losses",
    "embedding_std": ".methods.losses",
    "fit": ".engine",
    "begin": ".engine",
    "lr_at": ".engine",
    "World": ".engine",
    "MetricsLogger": ".engine",
    "RunDir": ".engine",
    "RealStream": ".engine",
    "checkpointed_step": ".engine",
    "pretrain": ".pretraining",
    "PRETRAIN_DEFAULTS": ".pretraining",
    "build_run": ".pretraining",
    "Run": ".pretraining",
    "evaluate": ".eval",
    "extract_features": ".eval",
    "knn_eval": ".eval",
    "linear_probe": ".eval",
    "linear_probe_augmented": ".eval",
}

if TYPE_CHECKING:  # the same names, for type checkers and IDEs
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
    from .engine import MetricsLogger, RealStream, RunDir, World, begin, checkpointed_step, fit, lr_at
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


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'squeezespan' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


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
    "checkpointed_step",
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
