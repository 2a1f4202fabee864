"""Layers over :mod:`nnkernels.ops` with torch's names, arguments, defaults, initialisation
and state-dict keys, and an explicit ``backward`` (no autograd).
"""

from .attention import MultiheadAttention, TransformerEncoderLayer
from .activation import GELU, Flatten, LeakyReLU, LogSoftmax, ReLU, Sigmoid, Softmax, Tanh, Unflatten
from .conv import Conv2d, ConvTranspose2d
from .dropout import Dropout
from .embedding import Embedding
from .linear import Identity, Linear
from .loss import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .module import Module, ModuleList, Parameter, Sequential, manual_seed
from .norm import LayerNorm
from .pool import AvgPool2d, MaxPool2d
from .rnn import GRU, LSTM, RNN

__all__ = [
    "Module", "Parameter", "Sequential", "ModuleList", "manual_seed",
    "Linear", "Identity",
    "ReLU", "LeakyReLU", "Sigmoid", "Tanh", "GELU", "Softmax", "LogSoftmax", "Flatten", "Unflatten",
    "Conv2d", "ConvTranspose2d",
    "MaxPool2d", "AvgPool2d",
    "MSELoss", "CrossEntropyLoss", "BCEWithLogitsLoss",
    "Dropout", "LayerNorm", "Embedding", "MultiheadAttention", "TransformerEncoderLayer",
    "RNN", "LSTM", "GRU",
]
