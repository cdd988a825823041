"""nas: neural architecture search for ResNet image classifiers under a parameter budget."""

from nas.api import SearchHooks, SearchResult, Study, train_architecture
from nas.arch import Arch
from nas.counting import count_macs, count_params
from nas.errors import NasError
from nas.model import build_model
from nas.retrain import load_model

__all__ = ["Arch", "NasError", "SearchHooks", "SearchResult", "Study", "build_model", "count_macs", "count_params",
           "load_model", "train_architecture"]
