"""Hypothesis strategies for random module trees on the meta device, shared by the modeling tests."""

from __future__ import annotations

import torch
from hypothesis import strategies as st
from torch import nn


class Block(nn.Module):
    """A splittable container."""


class NoSplit(nn.Module):
    """A container that device maps must never split (listed in no_split_module_classes)."""


# A tree node: (is_no_split, own parameter sizes, buffer size or 0, children).
def _node(children):
    return st.tuples(
        st.booleans(),
        st.lists(st.integers(1, 64), max_size=2),
        st.sampled_from([0, 0, 0, 3]),
        st.lists(children, max_size=4),
    )


trees = st.recursive(
    st.tuples(st.just(False), st.lists(st.integers(1, 64), min_size=1, max_size=2), st.just(0), st.just([])),
    _node,
    max_leaves=30,
)


def build_tree(spec, depth: int = 0, counter=None) -> nn.Module:
    """Build a meta-device module from a tree spec (the root is always a splittable Block).

    Every submodule and parameter gets a name unique in the whole tree ("m3", "p7"): upstream's tied-weight
    bookkeeping tests `name + "."` as a substring, so a name repeated at another depth ("c0" under "c1.c0")
    makes it misread which module holds a tied weight.
    """
    counter = counter if counter is not None else iter(range(10**6))
    no_split, sizes, buffer, children = spec
    module = (NoSplit if no_split and depth > 0 else Block)()
    for child in children:
        module.add_module(f"m{next(counter)}", build_tree(child, depth + 1, counter))
    if not children and not sizes:
        sizes = [1]
    for size in sizes:
        module.register_parameter(f"p{next(counter)}", nn.Parameter(torch.empty(size, device="meta")))
    if buffer and not children:
        # Buffers only on leaves: upstream (and so we) drop the own buffers of a module that gets split.
        module.register_buffer("b", torch.empty(buffer, device="meta"))
    return module


@st.composite
def tied_models(draw):
    """A random tree, sometimes with one parameter shared under a second name in another submodule.

    Two quirks of upstream's tied-weight handling are kept for identical maps, so the alias avoids them:
    a second name on the root itself, or in the same module as the first name, is never seen as tied
    (torch's named_parameters() drops the duplicate), and is never placed.
    """
    model = build_tree(draw(trees))
    params = list(model.named_parameters())
    pairs = [
        (keep, alias)
        for keep in range(len(params))
        for alias in range(keep + 1, len(params))
        if "." in params[alias][0] and params[alias][0].rpartition(".")[0] != params[keep][0].rpartition(".")[0]
    ]
    if pairs and draw(st.booleans()):
        keep, alias = draw(st.sampled_from(pairs))
        owner, _, leaf = params[alias][0].rpartition(".")
        setattr(model.get_submodule(owner), leaf, params[keep][1])
    return model
