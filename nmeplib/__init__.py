"""nmeplib: configs, datasets, models and a training engine for the course workbook."""
__version__ = "0.1.0"
