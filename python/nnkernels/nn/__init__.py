"""Layers over :mod:`nnkernels.ops` with torch's names, arguments, defaults, initialisation
and state-dict keys, and an explicit ``backward`` (no autograd).

Pending (waiting on their ops): Dropout, LayerNorm, Embedding, RNN, LSTM, GRU,
MultiheadAttention, TransformerEncoderLayer.
"""

from .activation import GELU, Flatten, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh, Unflatten
from .conv import Conv2d, ConvTranspose2d
from .linear import Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .module import Module, ModuleList, Parameter, Sequential, manual_seed
from .pool import AvgPool2d, MaxPool2d

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "manual_seed",
    "Linear", "Identity",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "Flatten", "Unflatten",
    "Conv2d", "ConvTranspose2d",
    "MaxPool2d", "AvgPool2d",
    "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss",
]
