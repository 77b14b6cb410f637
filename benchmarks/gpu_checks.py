"""Numerical checks of the real-size encoder architectures on one GPU (random weights):
bf16 autocast vs fp32 outputs, the attention implementation in use, and a backward pass with
gradient checkpointing (the fine-tuning path). Usage: ``python benchmarks/gpu_checks.py``."""

from __future__ import annotations

import argparse

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--encoders", default="mert-v1-95m,mert-v1-330m,wav2vec2-base,clap-music")
    parser.add_argument("--device", default="cuda")
    args = parser.parse_args()
    from embench.plugins import get_registry

    device = torch.device(args.device)
    for name in args.encoders.split(","):
        enc = get_registry().encoder(name)
        enc.load(device, "random")
        info = enc.info
        x = 0.1 * torch.randn(4, int(info.window_s * info.sample_rate), device=device)
        with torch.inference_mode(), torch.autocast(device.type, dtype=torch.bfloat16,
                                                    enabled=device.type == "cuda"):
            low = enc.forward(x)
        with torch.inference_mode():
            ref = enc.forward(x)
        low = list(low.unbind(1)) if isinstance(low, torch.Tensor) else list(low)
        ref = list(ref.unbind(1)) if isinstance(ref, torch.Tensor) else list(ref)
        cos = min(
            float(torch.nn.functional.cosine_similarity(a.float().flatten(1),
                                                        b.float().flatten(1)).min())
            for a, b in zip(low, ref, strict=True)
        )
        model = enc.trainable_module()
        print(f"{name}: {len(ref)} layers, shapes {[tuple(t.shape[1:]) for t in ref[:2]]}..., "
              f"attention {model.config._attn_implementation}, min cosine bf16 vs fp32 {cos:.5f}")
        assert all(torch.isfinite(t.float()).all() for t in low), f"{name}: non-finite in bf16"
        if getattr(enc, "supports_gradient_checkpointing", False):
            enc.set_gradient_checkpointing(True)
        model.train()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            out = enc.forward(x[:2])
            last = out[-1] if isinstance(out, (list, tuple)) else out[:, -1]
            last.float().mean().backward()
        grads = sum(p.grad is not None for p in model.parameters())
        print(f"{name}: backward ok ({grads} parameter tensors got gradients)")
        enc.unload()
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()


if __name__ == "__main__":
    main()
