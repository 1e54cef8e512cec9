"""The data operations' parts: traversal (local), packing (coalescing), backends, debug checks, collectives.

Import the public names from `accelerate_lite.utils.operations` (upstream's path) or `accelerate_lite.utils`.
"""
