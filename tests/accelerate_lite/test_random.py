"""set_seed and synchronize_rng_state(s): one process, and real gloo worlds."""

import random

import numpy as np
import pytest
import torch

import simulators
from accelerate_lite import PartialState, debug_launcher, synchronize_rng_states
from accelerate_lite.utils import set_seed, synchronize_rng_state


def draw(generator=None):
    """One value from every generator set_seed touches (and from generator, if given)."""
    values = [random.random(), float(np.random.rand()), torch.rand(3).tolist()]
    if generator is not None:
        values.append(torch.rand(3, generator=generator).tolist())
    return values


def test_set_seed_makes_random_numpy_and_torch_repeat():
    set_seed(1234)
    first = draw()
    set_seed(1234)
    assert draw() == first
    set_seed(4321)
    assert draw() != first


def test_synchronize_on_one_process_changes_nothing():
    generator = torch.Generator().manual_seed(7)
    set_seed(3)
    expected = draw(torch.Generator().manual_seed(7))
    set_seed(3)
    synchronize_rng_states(["torch", "generator"], generator=generator)
    synchronize_rng_state(None)
    assert draw(generator) == expected


def _streams(device_specific):
    set_seed(100, device_specific=device_specific)
    return draw()


def test_device_specific_seeds_differ_per_rank():
    same = debug_launcher(_streams, (False,), num_processes=3)
    assert same[0] == same[1] == same[2]
    different = debug_launcher(_streams, (True,), num_processes=3)
    assert len({repr(stream) for stream in different}) == 3
    set_seed(102)
    assert different[2] == draw()  # rank 2 used seed 100 + 2


def _synchronized_streams(rng_types):
    rank = PartialState().process_index
    set_seed(1000 + rank)  # every rank starts from its own state
    generator = torch.Generator().manual_seed(2000 + rank)
    before = torch.rand(3).tolist(), torch.rand(3, generator=generator).tolist()
    synchronize_rng_states(rng_types, generator=generator)
    after = torch.rand(4).tolist(), torch.rand(4, generator=generator).tolist()
    return before, after


@pytest.mark.parametrize("size", [2, 4])
def test_synchronized_ranks_draw_identical_streams(size):
    results = debug_launcher(_synchronized_streams, (["torch", "generator"],), num_processes=size)
    befores = [before for before, _ in results]
    afters = [after for _, after in results]
    assert len({repr(b) for b in befores}) == size, "ranks should start from different states"
    assert all(after == afters[0] for after in afters)
    # Rank 0's own streams carry on undisturbed: everyone takes rank 0's state.
    set_seed(1000)
    generator = torch.Generator().manual_seed(2000)
    torch.rand(3), torch.rand(3, generator=generator)
    assert afters[0] == (torch.rand(4).tolist(), torch.rand(4, generator=generator).tolist())


def test_only_the_named_generators_are_synchronized():
    results = debug_launcher(_synchronized_streams, (["generator"],), num_processes=2)
    (_, (torch0, gen0)), (_, (torch1, gen1)) = results
    assert gen0 == gen1 and torch0 != torch1


DEVICE_RNG = {"cuda": "cuda", "npu": "npu", "xpu": "xpu", "xla": "xla"}


def _device_rng_state(kind):
    if kind == "xla":
        import torch_xla.core.xla_model as xm

        return xm.get_rng_state()
    return getattr(torch, kind).get_rng_state().tolist()


def _synchronized_on_profile(kind):
    rank = PartialState().process_index
    set_seed(10 + rank)
    generator = torch.Generator().manual_seed(rank)
    rng_types = ["torch", "generator"] + ([DEVICE_RNG[kind]] if kind in DEVICE_RNG else [])
    synchronize_rng_states(rng_types, generator=generator)
    device_state = _device_rng_state(kind) if kind in DEVICE_RNG else None
    return torch.rand(2).tolist(), torch.rand(2, generator=generator).tolist(), device_state


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(simulators.PROFILES))
def test_synchronize_on_every_simulated_profile(worlds, name):
    """The device generators (cuda, npu, xpu, xla) go through the same broadcast on simulated hardware."""
    kind = simulators.get_profile(name).kind
    first, second = worlds(2, profile=name).run(_synchronized_on_profile, kind)
    assert first == second
