"""Helpers for the workbook's notebooks, used as ``import nmeplib.workbook as wb``.

``settings``: paths, smoke mode and configs from notebook parameters; ``views``: what a dataset
split looks like; ``compare``: model comparison tables; ``runs``: results of finished runs;
``check``: grade the student's AlexNet or ResNet18 (``nmeplib.grading``); ``format_table`` and
``save_table``: result tables (``nmeplib.tables``); ``execute``: sweep members run as notebooks
(``sweep_runner`` maps a runner name to the runner ``run_sweep`` takes); ``notebooks_dir``: where
the numbered notebooks are;
``check_parameters``: refuse a parameter papermill injected that the notebook does not declare
(``parameters``).
"""
from ..grading import check
from ..tables import format_table, save_table
from .settings import (
    DEMO_HDF5, HYPERPARAMETERS, NOTEBOOKS_ENV, PARAMETER_KEYS, SMOKE_ENV, SMOKE_IMG_SIZE, SMOKE_MAX_BATCH,
    SMOKE_MAX_EPOCHS, SMOKE_VALUES, NotebooksNotFound, hyperparameters, make_demo_hdf5, notebook_config,
    notebooks_dir, output_path, repo_root, smoke_mode, smoke_overrides, smoke_values)
from .execute import NotebookRunner, sweep_runner
from .parameters import SWEEP_SECTIONS, check_parameters, check_sections
from .runs import prediction_grid, read_summary, run_row, summary_row, with_speed
from .views import (
    augment_examples, channel_stats, class_counts, example_grid, examples_per_class,
    image_explorer, plot_augment, plot_class_counts, read_images, split_sizes, stats_table)
from .compare import flatten_width, memory_note, model_table, plot_model_comparison

__all__ = [
    "DEMO_HDF5", "HYPERPARAMETERS", "PARAMETER_KEYS", "SMOKE_ENV", "SMOKE_IMG_SIZE",
    "SMOKE_MAX_BATCH", "SMOKE_MAX_EPOCHS", "SMOKE_VALUES", "hyperparameters", "make_demo_hdf5",
    "notebook_config", "output_path", "repo_root", "smoke_mode", "smoke_overrides",
    "smoke_values", "prediction_grid", "read_summary", "run_row", "summary_row", "with_speed",
    "augment_examples", "channel_stats", "class_counts", "example_grid", "examples_per_class",
    "image_explorer", "plot_augment", "plot_class_counts", "read_images", "split_sizes",
    "stats_table", "flatten_width", "memory_note", "model_table", "plot_model_comparison", "check",
    "format_table", "save_table", "check_parameters", "check_sections", "SWEEP_SECTIONS", "NOTEBOOKS_ENV",
    "NotebooksNotFound", "notebooks_dir", "NotebookRunner", "sweep_runner"
]
