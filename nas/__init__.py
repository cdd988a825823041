"""nas: neural architecture search for ResNet image classifiers under a parameter budget."""

from nas.api import SearchHooks, SearchResult, Study, train_architecture
from nas.arch import Arch
from nas.counting import count_macs, count_params
from nas.errors import NasError
from nas.export import export as export_run
from nas.latency import measure_latency
from nas.model import build_model
from nas.retrain import load_model

__all__ = ["Arch", "NasError", "SearchHooks", "SearchResult", "Study", "build_model", "count_macs", "count_params",
           "export_run", "load_model", "measure_latency", "train_architecture"]
