"""AlexNet with the same layout as torchvision's, so its state dicts load into ours."""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


class AlexNet(nn.Module):
    """AlexNet; 57,044,810 parameters for 10 classes.

    The adaptive pool fixes the classifier's input at 256*6*6 = 9216 features, so any input of
    at least 63 px fits. Dropout layers stay in place even at p=0 to keep torchvision's indices.
    """

    def __init__(self, num_classes: int = 10, act: Callable[[], nn.Module] = nn.ReLU,
                 dropout: float = 0.5) -> None:
        super().__init__()
        # BEGIN SOLUTION
        # AlexNet.__init__: self.features = five Conv2d layers (64, 192, 384, 256, 256 channels), each
        # followed by act(), with a MaxPool2d(3, 2) after the 1st, 2nd and 5th (3x63x63 -> 256x1x1);
        # self.avgpool = AdaptiveAvgPool2d(6) (-> 256x6x6); self.flatten (-> 9,216 features);
        # self.classifier = Dropout, Linear to 4096, act(), Dropout, Linear to 4096, act(), Linear to
        # num_classes. 57,044,810 parameters for 10 classes, 57,823,240 for 200. Define the layers in
        # the order they run.
        self.features = nn.Sequential(
            nn.Conv2d(3, 64, kernel_size=11, stride=4, padding=2), act(), nn.MaxPool2d(3, 2),
            nn.Conv2d(64, 192, kernel_size=5, padding=2), act(), nn.MaxPool2d(3, 2),
            nn.Conv2d(192, 384, kernel_size=3, padding=1), act(),
            nn.Conv2d(384, 256, kernel_size=3, padding=1), act(),
            nn.Conv2d(256, 256, kernel_size=3, padding=1), act(), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(6)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(256 * 6 * 6, 4096), act(),
            nn.Dropout(dropout), nn.Linear(4096, 4096), act(),
            nn.Linear(4096, num_classes),
        )
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION
        # AlexNet.forward: features -> avgpool -> flatten -> classifier; (N, 3, 63, 63) -> (N, num_classes).
        return self.classifier(self.flatten(self.avgpool(self.features(x))))
        # END SOLUTION
