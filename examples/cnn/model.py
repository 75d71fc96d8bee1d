"""A small convolutional network on scikit-learn's digits (8x8 images, no download),
in PyTorch: the objective of the CNN example. Uses the GPU the worker is pinned to
(``CUDA_VISIBLE_DEVICES``) when there is one, the CPU otherwise.

The data is loaded once per process at import; each worker imports this module once
and then evaluates many trials with it.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")

_images, _labels = load_digits(return_X_y=True)
_images = (_images / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
X_TRAIN, X_VAL, Y_TRAIN, Y_VAL = (
    torch.from_numpy(a) for a in train_test_split(
        _images, _labels.astype(np.int64), test_size=0.25, random_state=0, stratify=_labels))


class DigitsCNN(nn.Module):
    """Two convolution blocks, then a small classifier head."""

    def __init__(self, channels: int, kernel_size: int, hidden: int, dropout: float) -> None:
        super().__init__()
        padding = kernel_size // 2
        self.features = nn.Sequential(
            nn.Conv2d(1, channels, kernel_size, padding=padding), nn.BatchNorm2d(channels),
            nn.ReLU(), nn.MaxPool2d(2),                                   # 8x8 -> 4x4
            nn.Conv2d(channels, 2 * channels, kernel_size, padding=padding),
            nn.BatchNorm2d(2 * channels), nn.ReLU(), nn.MaxPool2d(2),     # 4x4 -> 2x2
        )
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(2 * channels * 4, hidden), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(hidden, 10),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def _optimizer(params: dict, model: nn.Module) -> torch.optim.Optimizer:
    choice = params["optimizer"]
    if choice["name"] == "adam":
        return torch.optim.Adam(model.parameters(), lr=params["learning_rate"],
                                weight_decay=params["weight_decay"])
    return torch.optim.SGD(model.parameters(), lr=params["learning_rate"],
                           momentum=choice["momentum"], nesterov=choice["nesterov"],
                           weight_decay=params["weight_decay"])


def train_model(params: dict) -> dict:
    """Train the CNN with ``params``; the loss is the validation cross-entropy."""
    torch.manual_seed(0)
    model = DigitsCNN(params["channels"], params["kernel_size"], params["hidden"],
                      params["dropout"]).to(DEVICE)
    optimizer = _optimizer(params, model)
    loss_fn = nn.CrossEntropyLoss()
    x_train, y_train = X_TRAIN.to(DEVICE), Y_TRAIN.to(DEVICE)
    x_val, y_val = X_VAL.to(DEVICE), Y_VAL.to(DEVICE)
    batch_size = int(params["batch_size"])
    started = time.perf_counter()
    for epoch in range(int(params["epochs"])):
        model.train()
        order = torch.randperm(len(x_train), device=DEVICE)
        for start in range(0, len(order), batch_size):
            batch = order[start:start + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(x_train[batch]), y_train[batch])
            loss.backward()
            optimizer.step()
        if not torch.isfinite(loss):
            return {"loss": float("inf"), "status": "fail", "epochs": epoch + 1}
    model.eval()
    with torch.no_grad():
        logits = model(x_val)
        val_loss = float(loss_fn(logits, y_val))
        accuracy = float((logits.argmax(1) == y_val).float().mean())
    seconds = time.perf_counter() - started
    print(f"val loss {val_loss:.4f}, accuracy {accuracy:.4f} on {DEVICE} in {seconds:.1f} s")
    return {"loss": val_loss, "status": "ok", "accuracy": accuracy, "device": str(DEVICE),
            "train_seconds": seconds}
