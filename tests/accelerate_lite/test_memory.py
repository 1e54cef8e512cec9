"""find_executable_batch_size, release_memory and clear_device_cache."""

import weakref

import pytest
import torch

from accelerate_lite import find_executable_batch_size
from accelerate_lite.utils import (
    clear_device_cache,
    clear_import_caches,
    release_memory,
)
from accelerate_lite.utils.memory import (
    OUT_OF_MEMORY_MESSAGES,
    should_reduce_batch_size,
)


def fits_at_most(limit, error_factory, tried):
    """A training step that runs out of memory (error_factory()) above `limit`."""

    def train(batch_size, model, optimizer=None):
        tried.append(batch_size)
        if batch_size > limit:
            raise error_factory()
        return batch_size, model, optimizer

    return train


OUT_OF_MEMORY_ERRORS = {message: (lambda m=message: RuntimeError(f"{m} Tried to allocate 2.00 GiB"))
                        for message in OUT_OF_MEMORY_MESSAGES}
OUT_OF_MEMORY_ERRORS["torch.OutOfMemoryError"] = lambda: torch.cuda.OutOfMemoryError("out of memory on device 0")


@pytest.mark.parametrize("error", sorted(OUT_OF_MEMORY_ERRORS))
def test_halves_on_each_out_of_memory_error(error):
    tried = []
    train = find_executable_batch_size(fits_at_most(64, OUT_OF_MEMORY_ERRORS[error], tried), starting_batch_size=128)
    assert train("model", optimizer="adam") == (64, "model", "adam")
    assert tried == [128, 64]


def test_real_cpu_allocator_failure_is_recognised():
    """The CPU allocator's own error (a real allocation of 4 TiB) makes the batch smaller."""
    tried = []

    @find_executable_batch_size(starting_batch_size=2**12)
    def allocate(batch_size):
        tried.append(batch_size)
        return torch.empty(batch_size, 2**30, dtype=torch.uint8).shape[0]

    found = allocate()
    assert found == tried[-1] < 2**12 and len(tried) > 1


@pytest.mark.parametrize(
    "error",
    [
        ValueError("CUDA out of memory."),  # right words, wrong type
        RuntimeError("CUDA out of memory.", "second argument"),  # upstream only reads one-argument errors
        RuntimeError("shape mismatch"),
        KeyError("batch"),
    ],
    ids=repr,
)
def test_other_errors_pass_through_untouched(error):
    tried = []

    def train(batch_size):
        tried.append(batch_size)
        raise error

    with pytest.raises(type(error)) as caught:
        find_executable_batch_size(train, starting_batch_size=8)()
    assert caught.value is error and tried == [8]


def test_raises_once_batch_size_reaches_zero():
    tried = []
    train = find_executable_batch_size(fits_at_most(0, OUT_OF_MEMORY_ERRORS["CUDA out of memory."], tried),
                                       starting_batch_size=4)
    with pytest.raises(RuntimeError, match="No executable batch size found, reached zero"):
        train("model")
    assert tried == [4, 2, 1]


def test_batch_size_found_is_kept_for_the_next_call():
    tried = []
    train = find_executable_batch_size(fits_at_most(40, OUT_OF_MEMORY_ERRORS["CUDA out of memory."], tried))
    assert train("m")[0] == 32
    assert train("m")[0] == 32
    assert tried == [128, 64, 32, 32]


def test_bare_decorator_starts_at_128():
    @find_executable_batch_size
    def train(batch_size):
        return batch_size

    assert train() == 128 and train.__name__ == "train"


def test_functions_taking_var_positional_accept_extra_args():
    @find_executable_batch_size(starting_batch_size=4)
    def train(batch_size, *rest):
        return batch_size, rest

    assert train(1, 2, 3) == (4, (1, 2, 3))


def test_should_reduce_batch_size_table():
    assert all(should_reduce_batch_size(OUT_OF_MEMORY_ERRORS[name]()) for name in OUT_OF_MEMORY_ERRORS)
    assert not should_reduce_batch_size(RuntimeError(3))
    assert not should_reduce_batch_size(MemoryError())


def test_release_memory_returns_one_none_per_object_and_frees_them():
    a, b = torch.ones(1000), torch.ones(1000)
    watcher = weakref.ref(a)
    a, b = release_memory(a, b)
    assert (a, b) == (None, None) and watcher() is None
    assert release_memory() == []


def test_clear_device_cache_empties_the_cache_of_the_device_torch_reports(monkeypatch):
    # Mocked: there is no GPU here; torch is told CUDA is available so the CUDA cache is the one emptied.
    emptied = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: emptied.append("cuda"))
    clear_import_caches()
    clear_device_cache()
    assert emptied == ["cuda"]
    monkeypatch.undo()
    clear_import_caches()
    clear_device_cache()  # plain CPU: nothing to empty, nothing raises
    assert emptied == ["cuda"]
