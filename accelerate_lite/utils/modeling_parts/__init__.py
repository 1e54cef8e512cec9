"""The pieces behind accelerate_lite.utils.modeling, one concern per module.

Import from `accelerate_lite.utils.modeling` (or `accelerate_lite.utils`); these module paths are internal.
"""
