"""Real UNet architectures for GPU benchmarks: exact parameter counts of METHOD.md."""

import pytest

from agfsync.architectures import build_unet


@pytest.mark.parametrize("name, params", [("sd15", 859_520_964), ("sdxl", 2_567_463_684)])
def test_parameter_counts_match_the_published_models(name, params):
    unet = build_unet(name, empty=True)
    assert sum(p.numel() for p in unet.parameters()) == params
