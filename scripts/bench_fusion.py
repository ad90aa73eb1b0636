"""Time Mix-of-Show gradient fusion and report its peak memory, per concept, on random ED-LoRA-shaped concepts.

CPU (tiny SD1.5-layout model, upstream iterations, small activation sample):
    python scripts/bench_fusion.py --concepts 1 2 --spatial-size 256 --spatial-steps 10
GPU (full SD1.5 architecture, random weights, fp32 as upstream, research-branch defaults):
    python scripts/bench_fusion.py --full-sd15 --concepts 1 2 4

Concepts carry rank-4 deltas on every attention linear of the UNet (attn1/attn2 q, k, v, out) and of
the CLIP text encoder, plus two layer-wise tokens, like ED-LoRA. Defaults are the research branch's
(500 text/K-V iterations, 50 spatial iterations, 50 DDIM steps at 512x512). Upstream reports 14
concepts in about 50 minutes on one A100. Prints one JSON object per concept count; peak memory is
CUDA's max allocated (reset per run) or, on CPU, the process's peak RSS so far (monotonic).
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_composer import build_sd15_pipeline  # noqa: E402

from baselines.mixofshow.fusion import FusionConcept, FusionConfig, gradient_fusion  # noqa: E402
from bench.lora.canonical import ConceptLora, LoraDelta  # noqa: E402
from randomworld.models import build_random_pipeline  # noqa: E402

UNET_TARGETS = ("attn1.to_q", "attn1.to_k", "attn1.to_v", "attn1.to_out.0",
                "attn2.to_q", "attn2.to_k", "attn2.to_v", "attn2.to_out.0")
TEXT_TARGETS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj")


def random_edlora(pipe, index: int, rank: int = 4, std: float = 0.05) -> FusionConcept:
    """An ED-LoRA-shaped random concept (all attention linears, two 16-row layer-wise tokens)."""
    g = torch.Generator().manual_seed(index)

    def deltas(model, targets):
        out = {}
        for name, module in model.named_modules():
            if name.endswith(targets):
                out[name] = LoraDelta(torch.randn(rank, module.in_features, generator=g) * std,
                                      torch.randn(module.out_features, rank, generator=g) * std)
        return out

    layers = sum(1 for n, _ in pipe.unet.named_modules() if n.endswith("attn2"))
    dim = pipe.text_encoder.get_input_embeddings().embedding_dim
    tokens = (f"<c{index}x1>", f"<c{index}x2>")
    embeddings = {t: torch.randn(layers, dim, generator=g) * 0.013 for t in tokens}
    lora = ConceptLora(unet=deltas(pipe.unet, UNET_TARGETS), text_encoder=deltas(pipe.text_encoder, TEXT_TARGETS),
                       token_embeddings=embeddings, source=f"random:{index}", format="synthetic")
    return FusionConcept(lora, tokens)


def _peak_gib(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def main(argv: list[str] | None = None) -> list[dict]:
    """Run the fusion benchmark for each concept count; print and return one record per count."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-sd15", action="store_true", help="full SD1.5 architecture (random weights)")
    parser.add_argument("--concepts", type=int, nargs="+", default=[1, 2])
    defaults = FusionConfig()
    parser.add_argument("--text-iters", type=int, default=defaults.text_iters)
    parser.add_argument("--unet-iters", type=int, default=defaults.unet_iters)
    parser.add_argument("--spatial-steps", type=int, default=defaults.spatial_steps)
    parser.add_argument("--spatial-size", type=int, default=defaults.spatial_height)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch default)")
    parser.add_argument("--progress", action="store_true")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    pipe = build_sd15_pipeline(device, torch.float32) if args.full_sd15 else build_random_pipeline().to(device)
    config = FusionConfig(text_iters=args.text_iters, unet_iters=args.unet_iters, spatial_steps=args.spatial_steps,
                          spatial_height=args.spatial_size, spatial_width=args.spatial_size)
    machine = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    records = []
    for count in args.concepts:
        concepts = [random_edlora(pipe, i) for i in range(count)]
        if device.type == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        fused = gradient_fusion(pipe, concepts, config, progress=args.progress)
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        summary = fused.fit_summary()
        record = {
            "model": "sd15-architecture" if args.full_sd15 else "tiny", "device": str(device), "machine": machine,
            "threads": torch.get_num_threads(), "concepts": count, "config": config.__dict__,
            "seconds": round(seconds, 2), "seconds_per_concept": round(seconds / count, 2),
            "stage_seconds": {k: round(v, 2) for k, v in fused.seconds.items()},
            "peak_memory_gib": round(_peak_gib(device), 3),
            "fused_layers": len(fused.fits),
            "objective_fused_over_start": {s: round(summary[f"{s}_fused"] / max(summary[f"{s}_start"], 1e-30), 5)
                                           for s in ("text_encoder", "cross_kv", "spatial")},
        }
        print(json.dumps(record), flush=True)
        records.append(record)
    return records


if __name__ == "__main__":
    main()
