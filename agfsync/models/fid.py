"""FID for MJHQ-30K (stage 6).

Features: eval.mjhq.features
  inception   the standard FID network: torch-fidelity's InceptionV3 (TF-ported
              weights-inception-2015-12-05-6726825d.pth, 2048-d pool features) as
              torchmetrics' FrechetInceptionDistance uses it (uint8 input, bilinear
              antialiased resize to 299). The weight file is checked to load with
              torch.load(weights_only=True) before torch-fidelity (which loads it without
              that flag) reads it.
  <directory> a small feature network saved by `agfsync tiny-models` (family fid):
              offline demo and tests only; its FIDs are not comparable with published ones.
Distance: torchmetrics' Fréchet distance (its `_compute_fid`) on float64 means and
covariances, so the numbers are those of torchmetrics' FrechetInceptionDistance on the
same features; implementation names and versions are recorded with every result.
"""

from __future__ import annotations

import json
import logging
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from agfsync.core.sections import MJHQSettings

log = logging.getLogger(__name__)


class TinyFeatureNet(nn.Module):
    """Random two-layer conv net with the FID extractor's interface: uint8 (B,3,H,W) -> (B,D)."""

    def __init__(self, input_size: int = 32, num_features: int = 16):
        super().__init__()
        self.input_size, self.num_features = input_size, num_features
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, num_features, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        x = nn.functional.interpolate(images_BCHW.float(), size=(self.input_size, self.input_size), mode="bilinear",
                                      align_corners=False, antialias=True)
        return self.body((x - 128.0) / 128.0)

    def save_pretrained(self, directory: str | Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(
            {"input_size": self.input_size, "num_features": self.num_features}, indent=2) + "\n")
        save_file(self.state_dict(), directory / "model.safetensors")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> TinyFeatureNet:
        from safetensors.torch import load_file

        directory = Path(directory)
        net = cls(**json.loads((directory / "config.json").read_text()))
        net.load_state_dict(load_file(directory / "model.safetensors"))
        return net.eval()


def load_extractor(mjhq: MJHQSettings, device) -> tuple[nn.Module, dict]:
    """(module mapping uint8 (B,3,H,W) to (B,D) features, its description for the results),
    as eval.mjhq.features says."""
    if mjhq.features == "inception":
        from torchmetrics.image.fid import NoTrainInceptionV3

        weights = mjhq.inception_weights
        if not Path(weights).is_file():
            raise FileNotFoundError(f"eval.mjhq.inception_weights: {weights} not found (download rule download_file fetches it)")
        torch.load(weights, map_location="cpu", weights_only=True)  # refuses pickled code before torch-fidelity loads it
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights)
        info = {"features": "inception-v3-compat pool3 (2048)", "weights": Path(weights).name,
                "torch_fidelity": version("torch-fidelity")}
    else:
        net = TinyFeatureNet.from_pretrained(mjhq.features)
        info = {"features": f"tiny random conv net ({net.num_features})", "weights": mjhq.features}
    return net.to(device).eval(), info


@torch.no_grad()
def extract(images, net: nn.Module, device, batch_size: int = 64) -> np.ndarray:
    """Features (N, D) float64 of PIL images; consecutive images of one size share a batch."""
    out = []
    batch: list[np.ndarray] = []

    def flush():
        if batch:
            x = torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).contiguous().to(device)
            out.append(net(x).double().cpu().numpy().reshape(len(batch), -1))
            batch.clear()

    for image in images:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
        if batch and (array.shape != batch[0].shape or len(batch) == batch_size):
            flush()
        batch.append(array)
    flush()
    return np.concatenate(out) if out else np.zeros((0, 0))


def statistics(features_ND: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features_ND, dtype=np.float64)
    if features.shape[0] < 2:
        raise ValueError(f"FID needs at least 2 images per set, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets, by torchmetrics' formula in float64."""
    from torchmetrics.image.fid import _compute_fid

    mu_a, cov_a = statistics(features_a)
    mu_b, cov_b = statistics(features_b)
    value = _compute_fid(torch.from_numpy(mu_a), torch.from_numpy(np.atleast_2d(cov_a)),
                         torch.from_numpy(mu_b), torch.from_numpy(np.atleast_2d(cov_b)))
    return float(value)


def implementation() -> dict:
    return {"name": "torchmetrics FrechetInceptionDistance (Fréchet distance, float64)",
            "torchmetrics": version("torchmetrics")}
