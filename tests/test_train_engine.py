"""The DeepSpeed engine agfsync.train.engine builds: parameter groups that the 8-bit optimizer can
step on one GPU (SDXL), and the policy's bf16 autocast surviving DeepSpeed's forward."""

from __future__ import annotations

import copy
import sys

import pytest
import torch

from agfsync.train import engine as engine_mod
from agfsync.train.engine import build_engine, init_distributed, param_groups


def test_param_groups_keep_order_and_stay_under_the_limit():
    params = [torch.nn.Parameter(torch.zeros(n)) for n in (3, 4, 2, 9, 1, 1)]
    groups = param_groups(params, limit=7)
    assert [[p.numel() for p in g["params"]] for g in groups] == [[3, 4], [2], [9], [1, 1]]
    assert [p for g in groups for p in g["params"]] == params
    assert len(param_groups(params)) == 1  # the default limit, 2^30 elements
    assert engine_mod.MAX_GROUP_ELEMENTS == 2**30 < 2**31 - 1


def _train(train_settings, model, steps: int, autocast: bool = False):
    engine = build_engine(model, train_settings, 1e-2, micro_batch=2, grad_accum=1, warmup_steps=0,
                          total_steps=steps, autocast=autocast)
    g = torch.Generator().manual_seed(0)
    for _ in range(steps):
        x = torch.randn(2, 16, generator=g)
        loss = engine(x).float().pow(2).mean()
        engine.backward(loss)
        engine.step()
    return engine


@pytest.fixture
def distributed():
    """A one-process world for the test, torn down after it (tests/train_helpers.single_process_world)."""
    from train_helpers import single_process_world

    with single_process_world():
        init_distributed("gloo")
        yield


@pytest.fixture
def train(demo_config):
    from agfsync.core.sections import Settings

    cfg = copy.deepcopy(demo_config)
    cfg["train"].update(zero_stage=2, optimizer="adamw", grad_clip=1.0)
    return Settings.from_dict(cfg).train


def test_zero2_over_several_param_groups_updates_exactly_as_one_group(distributed, train, monkeypatch):
    """ZeRO-2 flattens each group separately; AdamW's update is per element, so weights must not
    depend on the grouping (the SDXL-on-one-GPU case, scaled down to a 2-layer net)."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.Tanh(), torch.nn.Linear(32, 16))
    one = _train(train, copy.deepcopy(net), 3)
    monkeypatch.setattr(engine_mod, "MAX_GROUP_ELEMENTS", 300)
    split = _train(train, copy.deepcopy(net), 3)
    assert len(one.client_optimizer.param_groups) == 1 and len(split.client_optimizer.param_groups) == 4
    for a, b in zip(one.module.parameters(), split.module.parameters(), strict=True):
        assert torch.equal(a, b)
    assert not torch.equal(next(one.module.parameters()), next(net.parameters()))  # it did train


def test_the_policy_forward_stays_bf16_inside_the_engine_as_on_a_gpu(distributed, train, monkeypatch):
    """On a GPU the trainer runs the engine under CUDA autocast; DeepSpeed checks
    torch.is_autocast_enabled() (CUDA's) and, unless told of it (torch_autocast), switches it off
    inside the engine's forward. The check is pointed at the CPU's autocast here to see that."""
    import deepspeed.runtime.torch_autocast as ds_autocast

    shim = type(sys)("torch_shim")
    shim.__dict__.update(torch.__dict__)
    shim.is_autocast_enabled = lambda *device: torch.is_autocast_enabled(*device) if device \
        else torch.is_autocast_enabled("cpu")
    monkeypatch.setattr(ds_autocast, "torch", shim)
    net = torch.nn.Linear(16, 16)
    x = torch.randn(2, 16)
    for autocast, dtype in ((True, torch.bfloat16), (False, torch.float32)):
        engine = build_engine(copy.deepcopy(net), train, 1e-3, micro_batch=2, grad_accum=1, warmup_steps=0,
                              total_steps=1, autocast=autocast)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert net(x).dtype == torch.bfloat16  # outside the engine, autocast applies
            assert engine(x).dtype == dtype
