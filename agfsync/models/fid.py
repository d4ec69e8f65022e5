"""FID for MJHQ-30K (stage 6).

Features: eval.mjhq.features
  inception   the standard FID network: torch-fidelity's InceptionV3 (TF-ported
              weights-inception-2015-12-05-6726825d.pth, 2048-d pool features), uint8 input,
              through torchmetrics' NoTrainInceptionV3. The weight file is checked to load
              with torch.load(weights_only=True) before torch-fidelity (which loads it
              without that flag) reads it.
  <directory> a small feature network saved by `agfsync tiny-models` (family fid):
              offline demo and tests only; its FIDs are not comparable with published ones.
Resize to the network's input (eval.mjhq.resize; absolute FIDs differ between them, so the
result records it under `implementation.resize`):
  torchmetrics    bilinear with antialiasing (torch.nn.functional.interpolate), torchmetrics'
                  FrechetInceptionDistance default
  torch-fidelity  bilinear as TensorFlow 1.x computes it (no antialiasing), as torch-fidelity
                  and the original TF FID code
  clean-fid       clean-fid's default mode "clean": each channel as a float image resized with
                  PIL's bicubic (a = -0.5, the kernel widened by the downscale factor, taps cut
                  at the border and renormalised), clipped to 0..255, not quantised. Our torch
                  code (_bicubic_matrix); tests check it against PIL itself. The Inception network
                  then gets these floats: torchmetrics' forward accepts only uint8 and resizes
                  inside, so _FloatInception runs its layers on our 299 x 299 input.
None of them is known to be the one behind the published MJHQ-30K numbers (docs/method.md).
Distance: the Fréchet distance of the two Gaussians in float64, our own code:
|mu_a - mu_b|^2 + tr(S_a) + tr(S_b) - 2 tr((S_a S_b)^(1/2)), the last trace from the
eigenvalues of S_a^(1/2) S_b S_a^(1/2) (symmetric positive semi-definite, so no complex
square roots); tests check it against torchmetrics' FrechetInceptionDistance and against
scipy's sqrtm (pytorch-fid's way).
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


RESIZES = {
    "torchmetrics": "bilinear, antialiased (torch.nn.functional.interpolate; torchmetrics' default)",
    "torch-fidelity": "bilinear as TensorFlow 1.x (torch_fidelity.interpolate_compat_tensorflow; torch-fidelity, TF FID)",
    "clean-fid": "PIL bicubic per channel in float, clipped to 0..255, unquantised (clean-fid's mode 'clean')",
}


def resize(images_BCHW: torch.Tensor, size: int, how: str) -> torch.Tensor:
    """Float images resized to size x size by the convention `how` (RESIZES)."""
    if how == "torchmetrics":
        return nn.functional.interpolate(images_BCHW.float(), size=(size, size), mode="bilinear", align_corners=False,
                                         antialias=True)
    if how == "torch-fidelity":
        from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

        return interpolate_bilinear_2d_like_tensorflow1x(images_BCHW.float(), size=(size, size), align_corners=False)
    if how == "clean-fid":
        height, width = images_BCHW.shape[-2:]
        rows = _bicubic_matrix(height, size).to(images_BCHW.device)
        cols = _bicubic_matrix(width, size).to(images_BCHW.device).T
        # one image at a time: float64 of a batch of 1024 px images would take gigabytes
        return torch.stack([(rows @ image.double() @ cols).clamp(0, 255).float() for image in images_BCHW])
    raise ValueError(f"unknown FID resize {how!r} (expected one of {', '.join(RESIZES)})")


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys' cubic convolution kernel with a = -0.5 (PIL's BICUBIC), support [-2, 2]."""
    x = np.abs(x)
    near = ((1.5 * x - 2.5) * x) * x + 1.0  # (a + 2)|x|^3 - (a + 3)|x|^2 + 1
    far = (((x - 5.0) * x + 8.0) * x - 4.0) * -0.5  # a (|x|^3 - 5|x|^2 + 8|x| - 4)
    return np.where(x < 1.0, near, np.where(x < 2.0, far, 0.0))


def _bicubic_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) float64 weights of PIL's bicubic resampling along one axis: output i is
    centred at (i + 0.5) n_in / n_out; when shrinking, the kernel is stretched by the factor
    (antialiasing); taps outside the image are dropped and each row renormalised to sum 1."""
    scale = n_in / n_out
    stretch = max(scale, 1.0)
    support = 2.0 * stretch
    centre = (np.arange(n_out) + 0.5) * scale
    first = np.maximum(np.floor(centre - support + 0.5), 0)[:, None]
    stop = np.minimum(np.floor(centre + support + 0.5), n_in)[:, None]
    taps = np.arange(n_in)[None, :]
    weights = np.where((taps >= first) & (taps < stop), _cubic((taps - centre[:, None] + 0.5) * (1.0 / stretch)), 0.0)
    return torch.from_numpy(weights / weights.sum(axis=1, keepdims=True))


class _FloatInception(nn.Module):
    """torchmetrics' NoTrainInceptionV3 on float images resized here (clean-fid's convention).
    Its forward takes uint8 only and resizes itself, so this runs the same layers as its
    `_torch_fidelity_forward` up to the 2048-d pool: (x - 128) / 128, Conv2d_1a_3x3 ... AvgPool."""

    LAYERS = ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
              "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
              "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool")

    def __init__(self, inception: nn.Module):
        super().__init__()
        self.inception = inception

    def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        x = (resize(images_BCHW, self.inception.INPUT_IMAGE_SIZE, "clean-fid") - 128) / 128
        for name in self.LAYERS:
            x = getattr(self.inception, name)(x)
        return torch.flatten(x, 1)


class TinyFeatureNet(nn.Module):
    """Random two-layer conv net with the FID extractor's interface: uint8 (B,3,H,W) -> (B,D)."""

    def __init__(self, input_size: int = 32, num_features: int = 16):
        super().__init__()
        self.input_size, self.num_features = input_size, num_features
        self.resize = "torchmetrics"  # set by load_extractor (eval.mjhq.resize)
        self.body = nn.Sequential(
            nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(8, num_features, 3, stride=2, padding=1), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )

    def forward(self, images_BCHW: torch.Tensor) -> torch.Tensor:
        x = resize(images_BCHW, self.input_size, self.resize)
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
    as eval.mjhq.features and eval.mjhq.resize say."""
    if mjhq.features == "inception":
        from torchmetrics.image.fid import NoTrainInceptionV3

        weights = mjhq.inception_weights
        if not Path(weights).is_file():
            raise FileNotFoundError(f"eval.mjhq.inception_weights: {weights} not found (download rule download_file fetches it)")
        torch.load(weights, map_location="cpu", weights_only=True)  # refuses pickled code before torch-fidelity loads it
        # torchmetrics and torch-fidelity: NoTrainInceptionV3's own resize (its antialias flag);
        # clean-fid: ours, the float result fed to its layers (_FloatInception)
        net = NoTrainInceptionV3(name="inception-v3-compat", features_list=["2048"], feature_extractor_weights_path=weights,
                                 antialias=mjhq.resize == "torchmetrics")
        through = "torchmetrics' NoTrainInceptionV3"
        if mjhq.resize == "clean-fid":
            net, through = _FloatInception(net), "its layers (torchmetrics' NoTrainInceptionV3) on float input"
        info = {"features": f"inception-v3-compat pool3 (2048), torch-fidelity's network through {through}",
                "weights": Path(weights).name,
                "torch_fidelity": version("torch-fidelity"), "torchmetrics": version("torchmetrics")}
    else:
        net = TinyFeatureNet.from_pretrained(mjhq.features)
        net.resize = mjhq.resize
        info = {"features": f"tiny random conv net ({net.num_features})", "weights": mjhq.features}
    info["resize"] = f"{mjhq.resize}: {RESIZES[mjhq.resize]}"
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


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    """The symmetric square root of a covariance matrix (negative rounding-error eigenvalues as 0)."""
    values, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    return (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T


def frechet_distance(features_a: np.ndarray, features_b: np.ndarray) -> float:
    """FID between two feature sets (the module docstring's formula), in float64."""
    mu_a, cov_a = statistics(features_a)
    mu_b, cov_b = statistics(features_b)
    cov_a, cov_b = np.atleast_2d(cov_a), np.atleast_2d(cov_b)
    root_a = _sqrt_psd(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_sqrt = float(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)).sum())
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_sqrt)


def implementation() -> dict:
    return {"name": "Fréchet distance of the feature Gaussians, float64 (agfsync.models.fid: eigenvalues of "
                    "S_a^1/2 S_b S_a^1/2)"}
