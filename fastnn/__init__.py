"""fastnn: fast multilayer perceptrons on the CPU, from compiled numba kernels.

>>> import fastnn as fnn
>>> model = fnn.Sequential(fnn.Linear(64, 100), fnn.ReLU(), fnn.Linear(100, 10))
>>> opt = fnn.SGD(model.parameters(), lr=0.1)
>>> history = model.fit(X, y, loss=fnn.SoftmaxCrossEntropy(), optimizer=opt)
"""

from . import callbacks, datasets, distributed, kernels
from ._threads import _threads_from_env, get_num_threads, set_num_threads
from ._warmup import warmup
from .callbacks import Callback, CSVLogger, EarlyStopping, LambdaCallback, ModelCheckpoint
from .io import load, load_optimizer, save
from .layers import (
    GELU,
    BatchNorm1d,
    Dropout,
    Identity,
    Layer,
    LayerNorm,
    LeakyReLU,
    Linear,
    ReLU,
    Sigmoid,
    Softmax,
    Tanh,
)
from .losses import (
    BCEWithLogits,
    CrossEntropy,
    HuberLoss,
    Loss,
    MSELoss,
    SoftmaxCrossEntropy,
)
from .model import Sequential
from .optim import (
    SGD,
    Adagrad,
    Adam,
    AdamW,
    CosineAnnealingLR,
    ExponentialLR,
    LRScheduler,
    Optimizer,
    ReduceLROnPlateau,
    RMSprop,
    StepLR,
)
from .parameter import Parameter
from .training import History, TrainingDivergedError

__version__ = "0.1.0"

__all__ = [
    "kernels",
    "callbacks",
    "datasets",
    "distributed",
    "Callback",
    "EarlyStopping",
    "ModelCheckpoint",
    "CSVLogger",
    "LambdaCallback",
    "save",
    "load",
    "load_optimizer",
    "set_num_threads",
    "get_num_threads",
    "Layer",
    "Linear",
    "Identity",
    "ReLU",
    "LeakyReLU",
    "Sigmoid",
    "Tanh",
    "Softmax",
    "Loss",
    "SoftmaxCrossEntropy",
    "CrossEntropy",
    "MSELoss",
    "Sequential",
    "Optimizer",
    "SGD",
    "Adam",
    "AdamW",
    "Parameter",
    "GELU",
    "Dropout",
    "BatchNorm1d",
    "LayerNorm",
    "HuberLoss",
    "BCEWithLogits",
    "RMSprop",
    "Adagrad",
    "LRScheduler",
    "StepLR",
    "ExponentialLR",
    "CosineAnnealingLR",
    "ReduceLROnPlateau",
    "History",
    "TrainingDivergedError",
    "warmup",
    "__version__",
]

_threads_from_env()  # FASTNN_NUM_THREADS=n: the same as set_num_threads(n) after import
