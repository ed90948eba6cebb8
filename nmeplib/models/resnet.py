"""ResNet18 for small images: a 3x3 stride-1 stem and no max-pool, so 32 px inputs keep detail."""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3x3 conv+BN layers plus a shortcut (1x1 conv+BN when the shape changes)."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, act: Callable[[], nn.Module]) -> None:
        super().__init__()
        # BEGIN SOLUTION
        # BasicBlock.__init__: conv1 (3x3, stride `stride`, padding 1, no bias), bn1, act1, conv2 (3x3,
        # padding 1, no bias), bn2, a shortcut (Identity, or a 1x1 conv with `stride` and no bias + BatchNorm2d
        # when stride != 1 or in_ch != out_ch) and act2: in_ch x H x W -> out_ch x H/stride x W/stride.
        # BasicBlock(64, 128, 2, nn.ReLU) has 230,144 parameters, BasicBlock(64, 64, 1, nn.ReLU) 73,984.
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_ch)
        self.act1 = act()
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_ch)
        self.shortcut = nn.Identity()
        if stride != 1 or in_ch != out_ch:
            self.shortcut = nn.Sequential(nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(out_ch))
        self.act2 = act()
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION
        # BasicBlock.forward: conv1 -> bn1 -> act1 -> conv2 -> bn2, add shortcut(x), then act2.
        out = self.bn2(self.conv2(self.act1(self.bn1(self.conv1(x)))))
        return self.act2(out + self.shortcut(x))
        # END SOLUTION


class ResNet18(nn.Module):
    """CIFAR-style ResNet18; 11,173,962 parameters for 10 classes. Fits any input size."""

    def __init__(self, num_classes: int = 10, act: Callable[[], nn.Module] = nn.ReLU,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64), act())
        # BEGIN SOLUTION
        # ResNet18.__init__: layer1..layer4, each two BasicBlocks (64, 128, 256, 512 channels; the first
        # block of layer2..4 has stride 2), self.avgpool = AdaptiveAvgPool2d(1), self.flatten, self.dropout
        # (Dropout(dropout) if dropout > 0, else Identity) and self.fc = Linear(512, num_classes).
        # At 32 px: 64x32x32 after the stem -> 512x4x4 after layer4 -> 512 features.
        # 11,173,962 parameters for 10 classes, 11,271,432 for 200.
        stages, in_ch = [], 64
        for out_ch, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
            stages.append(nn.Sequential(BasicBlock(in_ch, out_ch, stride, act),
                                        BasicBlock(out_ch, out_ch, 1, act)))
            in_ch = out_ch
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.fc = nn.Linear(512, num_classes)
        # END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        # BEGIN SOLUTION
        # ResNet18.forward: stem -> layer1 .. layer4 -> avgpool -> flatten -> dropout -> fc.
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        return self.fc(self.dropout(self.flatten(self.avgpool(x))))
        # END SOLUTION
