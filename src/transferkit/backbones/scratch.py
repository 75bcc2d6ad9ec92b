"""Small networks trained from random init: the control run (and, later, distillation students)."""

from __future__ import annotations

from torch import nn


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallCNN(nn.Module):
    """Three conv stages (32-64-128 channels), global average pooling, dropout, linear classifier."""

    def __init__(self, num_classes: int, in_chans: int = 3, width: int = 32, dropout: float = 0.3) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            _conv(in_chans, w),
            _conv(w, w),
            nn.MaxPool2d(2),
            _conv(w, 2 * w),
            _conv(2 * w, 2 * w),
            nn.MaxPool2d(2),
            _conv(2 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.num_features = 4 * w
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(4 * w, num_classes))

    def forward(self, x):  # type: ignore[no-untyped-def]
        return self.head(self.features(x))
