"""GPU check: 8-bit and 4-bit load_and_quantize_model of a small in-code model, compared with the fp32 model.

Run on a CUDA machine with bitsandbytes installed, from the repository root:

    PYTHONPATH=. python ci/gpu/bnb_check.py

A tiny MLP is built in code (no downloads), its fp32 weights are saved as a sharded safetensors
checkpoint in a tmp folder, and each case loads it quantized on cuda:0 and runs the same input. For each
case it prints the quantized layer count, the max and mean absolute error of the outputs against the fp32
model (and both relative to the output's scale) and PASS/FAIL; the exit status is 1 if any case fails.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import tempfile
import traceback

import torch
from safetensors.torch import save_file
from torch import nn

from accelerate_lite import init_empty_weights
from accelerate_lite.utils import BnbQuantizationConfig, load_and_quantize_model, shard_checkpoint

IN, HIDDEN, OUT, BATCH = 256, 512, 64, 32

# Relative error budgets (error / mean |fp32 output|): LLM.int8 is near-lossless, 4-bit is coarser.
CASES = {
    "8bit": ({"load_in_8bit": True}, 0.05, 0.25),
    "4bit-nf4": ({"load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": "fp16"}, 0.15, 0.8),
    "4bit-fp4": ({"load_in_4bit": True, "bnb_4bit_quant_type": "fp4", "bnb_4bit_compute_dtype": "fp16"}, 0.2, 1.0),
}


def build() -> nn.Module:
    return nn.Sequential(
        nn.Linear(IN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, HIDDEN), nn.GELU(),
        nn.Linear(HIDDEN, HIDDEN), nn.GELU(), nn.Linear(HIDDEN, OUT),  # the last one (the "head") stays unquantized
    )


def save_checkpoint(model: nn.Module, folder: str) -> None:
    shards, index = shard_checkpoint(model.state_dict(), max_shard_size="1MB", weights_name="model.safetensors")
    for name, shard in shards.items():
        save_file({k: v.contiguous() for k, v in shard.items()}, os.path.join(folder, name), metadata={"format": "pt"})
    with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f)
    print(f"checkpoint: {len(shards)} safetensors shards in {folder}")


def quantized_layers(model: nn.Module) -> dict:
    names = ("Linear8bitLt", "Linear4bit")
    counts: dict = {}
    for module in model.modules():
        if type(module).__name__ in names or any(c.__name__ in names for c in type(module).__mro__):
            key = next(c.__name__ for c in type(module).__mro__ if c.__name__ in names)
            counts[key] = counts.get(key, 0) + 1
    return counts


def compare(label: str, output: torch.Tensor, reference: torch.Tensor, mean_budget: float, max_budget: float) -> bool:
    error = (output.float() - reference).abs()
    scale = reference.abs().mean().item()
    max_err, mean_err = error.max().item(), error.mean().item()
    ok = bool(torch.isfinite(output).all()) and mean_err / scale <= mean_budget and max_err / scale <= max_budget
    print(f"  {label}: max abs err {max_err:.5f}, mean abs err {mean_err:.5f} (mean |fp32 out| {scale:.5f}: "
          f"relative max {max_err / scale:.4f} <= {max_budget}, mean {mean_err / scale:.4f} <= {mean_budget}) "
          f"-> {'PASS' if ok else 'FAIL'}")
    return ok


def main() -> int:
    print(f"python {platform.python_version()}, torch {torch.__version__}, cuda available {torch.cuda.is_available()}")
    if not torch.cuda.is_available():
        print("FAIL: no CUDA device; this check needs a GPU")
        return 1
    print(f"device: {torch.cuda.get_device_name(0)}")
    try:
        import bitsandbytes

        print(f"bitsandbytes {bitsandbytes.__version__}")
    except Exception as error:  # noqa: BLE001 - report any import failure of the carried wheel
        print(f"FAIL: bitsandbytes does not import: {error!r}")
        return 1

    torch.manual_seed(0)
    reference_model = build().eval()
    x = torch.randn(BATCH, IN)
    with torch.no_grad():
        reference = reference_model.cuda()(x.cuda()).float()
    folder = tempfile.mkdtemp(prefix="bnb-check-")
    save_checkpoint(reference_model.cpu(), folder)

    results = {}
    for label, (fields, mean_budget, max_budget) in CASES.items():
        for path in ("meta + checkpoint", "loaded model"):
            name = f"{label} / {path}"
            print(f"{name}:")
            try:
                config = BnbQuantizationConfig(**fields)
                if path == "meta + checkpoint":
                    with init_empty_weights():
                        empty = build()
                    model = load_and_quantize_model(empty, config, weights_location=folder, device_map={"": 0})
                else:
                    loaded = build()
                    loaded.load_state_dict(reference_model.state_dict())
                    model = load_and_quantize_model(loaded, config)
                print(f"  quantized layers: {quantized_layers(model)}; first weight {model[0].weight.dtype} on "
                      f"{model[0].weight.device}")
                with torch.no_grad():
                    output = model.eval()(x.cuda().to(config.torch_dtype))
                results[name] = compare("vs fp32", output, reference, mean_budget, max_budget)
                results[name] &= bool(quantized_layers(model))
            except Exception:  # noqa: BLE001 - report and go on with the other cases
                traceback.print_exc()
                results[name] = False
            print(f"  => {'PASS' if results[name] else 'FAIL'}")
    print("\nsummary:")
    for name, ok in results.items():
        print(f"  {'PASS' if ok else 'FAIL'}  {name}")
    return 0 if all(results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
