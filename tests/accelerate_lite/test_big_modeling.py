"""init_empty_weights / init_on_device: what lands on the meta device, and that nothing leaks out of the context."""

from __future__ import annotations

import torch
from torch import nn

from accelerate_lite import init_empty_weights, init_on_device
from accelerate_lite.utils import patch_environment


class WithBuffer(nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = nn.Linear(1000, 1000)
        self.register_buffer("scale", torch.ones(3))


def test_init_empty_weights_puts_parameters_on_meta_but_not_buffers():
    with init_empty_weights():
        model = WithBuffer()
    assert model.linear.weight.is_meta and model.linear.weight.requires_grad
    assert model.scale.device.type == "cpu"
    assert not nn.Linear(2, 2).weight.is_meta  # the patch is gone after the context


def test_include_buffers_from_the_argument_or_the_environment():
    with init_empty_weights(include_buffers=True):
        model = WithBuffer()
    assert model.scale.is_meta
    with patch_environment(accelerate_init_include_buffers="1"):
        with init_empty_weights():
            model = WithBuffer()
    assert model.scale.is_meta


def test_init_on_device_keeps_parameter_classes_and_flags():
    class Flagged(nn.Parameter):
        pass

    with init_on_device(torch.device("meta")):
        module = nn.Module()
        module.frozen = Flagged(torch.ones(2), requires_grad=False)
    assert type(module.frozen) is Flagged and module.frozen.is_meta and not module.frozen.requires_grad
