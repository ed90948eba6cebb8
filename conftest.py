"""pytest set-up for the whole repository (tests/ and notebooks/ under nbval).

Notebooks run in smoke mode (bundled digits, one or two epochs) and W&B never reaches the
network; both can still be overridden from the environment.
"""
import os

os.environ.setdefault("NMEPLIB_SMOKE", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("MPLBACKEND", "Agg")
