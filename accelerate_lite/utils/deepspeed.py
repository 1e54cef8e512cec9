"""HfDeepSpeedConfig: a DeepSpeed configuration dictionary that can be queried by dotted keys.

Needs no deepspeed install: it only reads and edits the configuration (a dict, a JSON file, or the
base64 of a JSON document, as upstream accepts).
"""

import base64
import copy
import json
import os

from ..errors import ConfigurationError

OFFLOAD_DEVICES = ("cpu", "nvme")


class HfDeepSpeedConfig:
    """A DeepSpeed config that can be asked for its ZeRO stage, offload, and any dotted key.

    Args:
        config_file_or_dict: a dict (deep-copied, so the caller's stays intact), a path to a JSON file,
            or a urlsafe-base64-encoded JSON string.

    Raises:
        ConfigurationError: when the argument is none of those, saying what arrived.

    Example:
        >>> config = HfDeepSpeedConfig({"zero_optimization": {"stage": 3}})
        >>> config.is_zero3(), config.get_value("zero_optimization.stage")
        (True, 3)
    """

    def __init__(self, config_file_or_dict):
        self.config = _load(config_file_or_dict)
        self.set_stage_and_offload()

    def set_stage_and_offload(self):
        """Recompute the cached ZeRO stage and whether anything is offloaded (after edits to config)."""
        self._stage = self.get_value("zero_optimization.stage", -1)
        devices = {
            self.get_value("zero_optimization.offload_optimizer.device"),
            self.get_value("zero_optimization.offload_param.device"),
        }
        self._offload = (self.is_zero2() or self.is_zero3()) and bool(devices & set(OFFLOAD_DEVICES))

    def find_config_node(self, ds_key_long):
        """Return (the dict holding the last part of a dotted key, that last part); (None, part) if absent."""
        *parents, ds_key = ds_key_long.split(".")
        node = self.config
        for name in parents:
            node = node.get(name) if isinstance(node, dict) else None
            if node is None:
                return None, ds_key
        return node, ds_key

    def get_value(self, ds_key_long, default=None):
        """The value at a dotted key, or default when it is not set."""
        node, ds_key = self.find_config_node(ds_key_long)
        if node is None:
            return default
        return node.get(ds_key, default)

    def del_config_sub_tree(self, ds_key_long, must_exist=False):
        """Remove the entry at a dotted key; a missing one is an error only when must_exist."""
        node, ds_key = self.find_config_node(ds_key_long)
        if node is None or ds_key not in node:
            if must_exist:
                raise ConfigurationError(f"cannot find {ds_key_long!r} in the DeepSpeed config: {self.config}")
            return
        node.pop(ds_key)

    def is_true(self, ds_key_long):
        """True only when the key is set to a true value."""
        value = self.get_value(ds_key_long)
        return False if value is None else bool(value)

    def is_false(self, ds_key_long):
        """True only when the key is set to a false value."""
        value = self.get_value(ds_key_long)
        return False if value is None else not bool(value)

    def is_zero2(self):
        """Whether ZeRO stage 2 is configured."""
        return self._stage == 2

    def is_zero3(self):
        """Whether ZeRO stage 3 is configured."""
        return self._stage == 3

    def is_offload(self):
        """Whether ZeRO 2/3 offloads the optimizer or parameters to cpu or nvme."""
        return self._offload


def _load(source) -> dict:
    if isinstance(source, dict):
        return copy.deepcopy(source)
    if isinstance(source, (str, os.PathLike)) and os.path.exists(source):
        with open(source, encoding="utf-8") as handle:
            return json.load(handle)
    try:
        return json.loads(base64.urlsafe_b64decode(source).decode("utf-8"))
    except (UnicodeDecodeError, AttributeError, TypeError, ValueError):
        raise ConfigurationError(
            f"DeepSpeed config {source!r}: expected a dict, a path to an existing JSON file, or a base64-encoded "
            "JSON string; check the path"
        ) from None
