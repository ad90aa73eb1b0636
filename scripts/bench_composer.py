"""Time LoRA-Composer against plain sampling of the same model, size and steps; report peak memory.

CPU (tiny SD1.5-layout model):   python scripts/bench_composer.py --size 256x256 --regions 4
GPU (full SD1.5 architecture, random weights, fp16):
                                 python scripts/bench_composer.py --full-sd15 --size 512x1024 --regions 4

"Plain" is diffusers' StableDiffusionPipeline (latent output, no VAE decode) with the same scheduler,
steps and CFG; "composer" is the text stage plus the LoRA-Composer sampler (no VAE decode either).
By default the refinement runs the whole official window (26 steps, no early stop) so the number is
the worst case; ``--early-stop`` uses the official rule instead. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from bench.pipelines import sd_scheduler  # noqa: E402
from bench.seeds import initial_noise  # noqa: E402
from bench.tokenizer import build_clip_tokenizer  # noqa: E402
from composer.config import ComposerConfig  # noqa: E402
from composer.guidance import composer_sampler  # noqa: E402
from composer.layout import RegionInput, prepare_layout  # noqa: E402
from randomworld.loras import random_concept_lora  # noqa: E402
from randomworld.models import build_random_pipeline  # noqa: E402

SD15_UNET = dict(
    sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
    block_out_channels=(320, 640, 1280, 1280),
    down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
    up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3,
    cross_attention_dim=768, attention_head_dim=8,
)
SD15_VAE = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2,
    block_out_channels=(128, 256, 512, 512),
    down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
    scaling_factor=0.18215,
)


def build_sd15_pipeline(device: torch.device, dtype: torch.dtype) -> StableDiffusionPipeline:
    """The real SD1.5 architecture from code, random weights (timing only)."""
    tokenizer = build_clip_tokenizer()
    torch.manual_seed(0)
    with torch.device(device):
        text_encoder = CLIPTextModel(CLIPTextConfig(
            hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
            vocab_size=len(tokenizer), max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768,
            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id))
        unet = UNet2DConditionModel(**SD15_UNET)
        vae = AutoencoderKL(**SD15_VAE)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text_encoder.eval(), tokenizer=tokenizer, unet=unet.eval(),
                                   scheduler=sd_scheduler(), safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)
    return pipe.to(device=device, dtype=dtype)


def layout_boxes(regions: int) -> list[tuple[float, float, float, float]]:
    """Side-by-side boxes like the paper's anime layouts (full height minus a top margin)."""
    width = 1.0 / regions
    return [(r * width + 0.01, 0.1, (r + 1) * width - 0.01, 1.0) for r in range(regions)]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _peak(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # process peak RSS (Linux: KiB)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark; print and return the numbers."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-sd15", action="store_true", help="full SD1.5 architecture (fp16 on cuda)")
    parser.add_argument("--size", default="256x256", help="HxW in pixels")
    parser.add_argument("--regions", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--max-refine-steps", type=int, default=26)
    parser.add_argument("--early-stop", action="store_true", help="official early stop (default: full window)")
    parser.add_argument("--loss-level", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved timed repetitions (minimum reported)")
    parser.add_argument("--skip-plain", action="store_true")
    args = parser.parse_args(argv)
    height, width = (int(v) for v in args.size.lower().split("x"))
    device = torch.device(args.device)
    dtype = torch.float16 if (args.full_sd15 and device.type == "cuda") else torch.float32
    pipe = build_sd15_pipeline(device, dtype) if args.full_sd15 else build_random_pipeline().to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    tokens = [(f"<c{r}a>", f"<c{r}b>") for r in range(args.regions)]
    loras = [random_concept_lora(pipe.unet, pipe.text_encoder, t, seed=r) for r, t in enumerate(tokens)]
    regions = [RegionInput(box, f"a {t[0]} {t[1]}, walking near a lake", lora, t, "low quality")
               for box, t, lora in zip(layout_boxes(args.regions), tokens, loras, strict=True)]
    prompt, negative = "four people walking near a lake, high quality", "low quality"
    noise = initial_noise(0, (1, 4, height // 8, width // 8))
    config = ComposerConfig(num_steps=args.steps, max_refine_steps=args.max_refine_steps,
                            early_stop_from=5 if args.early_stop else 10**9, loss_level=args.loss_level)

    def plain() -> None:
        pipe(prompt, negative_prompt=negative, num_inference_steps=args.steps, guidance_scale=7.5,
             latents=noise.clone().to(device, dtype), height=height, width=width, output_type="latent")

    log: dict = {}

    def composer() -> None:
        layout = prepare_layout(pipe, prompt, negative, regions)
        scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config)
        log.update(composer_sampler(pipe.unet, scheduler, layout, config)(noise).log)

    def timed(fn) -> tuple[float, float]:
        if device.type == "cuda":
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        _sync(device)
        start = time.perf_counter()
        fn()
        _sync(device)
        return time.perf_counter() - start, _peak(device)

    if device.type == "cuda":  # warm-up (kernels, allocator) at a small size
        small = ComposerConfig(num_steps=2, max_refine_steps=2, loss_level=args.loss_level)
        layout = prepare_layout(pipe, prompt, negative, regions)
        composer_sampler(pipe.unet, type(pipe.scheduler).from_config(pipe.scheduler.config), layout, small)(
            noise[..., : max(16, noise.shape[-2] // 2), : max(16, noise.shape[-1] // 2)])
    result: dict = {
        "model": "full SD1.5 architecture (random weights)" if args.full_sd15 else "tiny SD1.5 layout",
        "size_hw": [height, width], "regions": args.regions, "steps": args.steps, "dtype": str(dtype),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "cpu_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "torch": torch.__version__,
    }
    # Interleaved repetitions, the minimum of each: robust against other load on a shared machine.
    runs: dict[str, list[tuple[float, float]]] = {"plain": [], "composer": []}
    for _ in range(args.repeats):
        if not args.skip_plain:
            runs["plain"].append(timed(plain))
        runs["composer"].append(timed(composer))
    for name, values in runs.items():
        if values:
            result[f"{name}_s"] = round(min(v[0] for v in values), 3)
            result[f"{name}_peak_gib"] = round(max(v[1] for v in values), 3)
    result["refine_steps_run"] = log.get("refine_steps")
    result["early_stop_step"] = log.get("stop_step")
    if "plain_s" in result:
        result["ratio"] = round(result["composer_s"] / result["plain_s"], 3)
    result["peak_memory_note"] = "CUDA max_memory_allocated" if device.type == "cuda" else "process peak RSS"
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
