"""LeNet-5 as the course builds it: two conv/pool stages and three Linear layers, for 32 px inputs."""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


class LeNet(nn.Module):
    """LeNet with average pooling; 83,126 parameters for 10 classes.

    The first Linear layer expects 16*6*6 = 576 features, so only 32x32 inputs fit.
    ``dropout`` > 0 puts a Dropout before each of the last two Linear layers.
    """

    def __init__(self, num_classes: int = 10, act: Callable[[], nn.Module] = nn.Sigmoid,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 6, kernel_size=5, padding=2), act(), nn.AvgPool2d(2),
            nn.Conv2d(6, 16, kernel_size=5), act(), nn.AvgPool2d(2),
        )

        def drop() -> list[nn.Module]:
            return [nn.Dropout(dropout)] if dropout > 0 else []

        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(16 * 6 * 6, 120), act(),
            *drop(), nn.Linear(120, 84), act(),
            *drop(), nn.Linear(84, num_classes),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))
