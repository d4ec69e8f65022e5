"""Real UNet architectures for GPU benchmarks: exact parameter counts of docs/method.md."""

import pytest

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "bench_architectures", Path(__file__).resolve().parents[1] / "bench" / "architectures.py")
architectures = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(architectures)
build_unet = architectures.build_unet


@pytest.mark.parametrize("name, params", [("sd15", 859_520_964), ("sdxl", 2_567_463_684)])
def test_parameter_counts_match_the_published_models(name, params):
    unet = build_unet(name, empty=True)
    assert sum(p.numel() for p in unet.parameters()) == params
