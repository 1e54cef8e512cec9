"""pytest plugin entry point (registered as pytest11 'accelerate_lite_harness')."""
