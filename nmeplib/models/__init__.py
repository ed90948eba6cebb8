"""The course's image classifiers (LeNet, AlexNet, ResNet18), built by name, and layer summaries."""
from .build import MODEL_NAMES, build_model, build_model_from_config
from .summary import count_parameters, format_summary, input_size_error, model_summary

__all__ = ["MODEL_NAMES", "build_model", "build_model_from_config",
           "count_parameters", "model_summary", "format_summary", "input_size_error"]
