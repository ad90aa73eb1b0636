"""Benchmark LoRA-Composer against plain CFG sampling of the same model, size, steps and seed.

CPU (tiny SD1.5-layout model, 1 thread, CPU time of interleaved pairs in one process):
    python scripts/bench_composer.py --sizes 256x256 --regions 1 2 4 8
GPU (full SD1.5 architecture, random weights, fp16, VAE decoding included on both sides):
    python scripts/bench_composer.py --full-sd15 --sizes 512x1024 --regions 4 --device cuda
Toy world's architecture (random weights, its DDIM schedule), each UNet size in turn, in one process:
    python scripts/bench_composer.py --toy-unet small wide --sizes 64x64 --regions 2 4 --loss-level 1

What it measures and how it proves it measured it:

- "plain" is diffusers' ``StableDiffusionPipeline`` (prompt encoding, 50 DPM-Solver++ steps, CFG 7.5);
  "composer" is LoRA-Composer's text stage plus its sampler (re-initialization, refinement, CFG
  sampling). Both start from the same noise; ``--decode`` adds the VAE decode to both sides.
- Boxes are laid out on a grid (2x2 for 4 regions, 3x3 for 8, ...) and the script refuses to run a
  size at which a box is empty on the loss grid (an empty box has no loss: nothing to measure).
- Every UNet forward and every backward pass is counted; the composer side must take exactly the
  refinement steps it claims (by default the whole official window of 26 steps, no early stop).
- With several ``--toy-unet`` sizes, each size's LoRA-Composer time is also given as a ratio to the first
  size's, measured in the same process at the same (size, regions).
- CPU: time is the process's CPU time (``time.process_time``) with ``--threads`` intra-op threads,
  pairs interleaved after one warm-up of each side; peak memory is the peak RSS of a separate
  process per side (``ru_maxrss`` only rises, so one process cannot measure two sides).
  CUDA: wall time after ``synchronize``; peak reserved and allocated memory per side.

Prints one JSON object per (size, regions) and a markdown table at the end.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from diffusers import AutoencoderKL, StableDiffusionPipeline, UNet2DConditionModel  # noqa: E402
from transformers import CLIPTextConfig, CLIPTextModel  # noqa: E402

from bench.boxes import box_to_grid  # noqa: E402
from bench.layers import attention_level, cross_attention_layers, grid_at_level  # noqa: E402
from bench.pipelines import sd_scheduler  # noqa: E402
from bench.seeds import initial_noise  # noqa: E402
from bench.tokenizer import build_clip_tokenizer  # noqa: E402
from composer.config import ComposerConfig  # noqa: E402
from composer.guidance import composer_sampler  # noqa: E402
from composer.layout import RegionInput, prepare_layout  # noqa: E402
from randomworld.loras import random_concept_lora  # noqa: E402
from randomworld.models import build_random_pipeline  # noqa: E402
from toyworld.models import UNET_SIZES, ZERO_SNR_V, build_text_encoder, build_unet, build_vae, toy_pipeline  # noqa: E402

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
PROMPT, NEGATIVE = "people walking near a lake, high quality", "low quality"
Box = tuple[float, float, float, float]


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


def build_toy_pipeline(unet_size: str) -> StableDiffusionPipeline:
    """The toy world's architecture with a UNet of ``unet_size``, random weights, its DDIM schedule (timing only)."""
    torch.manual_seed(0)
    return toy_pipeline(build_vae(), build_text_encoder(), build_unet(unet_size), ZERO_SNR_V)


def grid_layout(regions: int, margin: float = 0.02) -> list[Box]:
    """``regions`` boxes on a near-square grid (2x2 for 4, 3x3 less one for 8), row by row, with a margin."""
    cols = math.ceil(math.sqrt(regions))
    rows = math.ceil(regions / cols)
    boxes = []
    for r in range(regions):
        row, col = divmod(r, cols)
        boxes.append((col / cols + margin, row / rows + margin, (col + 1) / cols - margin, (row + 1) / rows - margin))
    return boxes


def empty_boxes(boxes: list[Box], latent_hw: tuple[int, int], levels: list[int]) -> list[tuple[int, int]]:
    """``(region, level)`` of every box that is empty on the attention grid of a level."""
    empty = []
    for level in levels:
        h, w = grid_at_level(latent_hw, level)
        for r, box in enumerate(boxes):
            y0, y1, x0, x1 = box_to_grid(box, h, w)
            if y1 <= y0 or x1 <= x0:
                empty.append((r, level))
    return empty


class Counters:
    """Counts UNet forwards (a forward pre-hook) and backward passes (``torch.autograd.grad`` / ``backward``)."""

    def __init__(self, unet: torch.nn.Module):
        self.forwards = 0
        self.backwards = 0
        unet.register_forward_pre_hook(self._forward)
        grad, backward = torch.autograd.grad, torch.Tensor.backward

        def counted_grad(*args: Any, **kwargs: Any) -> Any:
            self.backwards += 1
            return grad(*args, **kwargs)

        def counted_backward(*args: Any, **kwargs: Any) -> Any:
            self.backwards += 1
            return backward(*args, **kwargs)

        torch.autograd.grad = counted_grad  # type: ignore[assignment]
        torch.Tensor.backward = counted_backward  # type: ignore[method-assign]

    def _forward(self, module: torch.nn.Module, args: Any) -> None:
        self.forwards += 1

    def take(self) -> tuple[int, int]:
        """(forwards, backwards) since the last call."""
        counts = (self.forwards, self.backwards)
        self.forwards = self.backwards = 0
        return counts


class Bench:
    """One (model, size, regions) setting: the two sides as callables."""

    def __init__(self, args: argparse.Namespace, size: tuple[int, int], regions: int,
                 pipe: StableDiffusionPipeline | None = None, toy_unet: str | None = None):
        self.args, (self.height, self.width), self.regions = args, size, regions
        self.device = torch.device(args.device)
        self.dtype = getattr(torch, args.dtype)
        self.pipe = pipe or make_pipeline(args, toy_unet)
        tokens = [(f"<c{r}a>", f"<c{r}b>") for r in range(regions)]
        loras = [random_concept_lora(self.pipe.unet, self.pipe.text_encoder, t, seed=r) for r, t in enumerate(tokens)]
        self.boxes = grid_layout(regions)
        self.inputs = [RegionInput(box, f"a {t[0]} {t[1]}, walking near a lake", lora, t, NEGATIVE)
                       for box, t, lora in zip(self.boxes, tokens, loras, strict=True)]
        self.latent_hw = (self.height // self.pipe.vae_scale_factor, self.width // self.pipe.vae_scale_factor)
        self.noise = initial_noise(0, (1, 4, *self.latent_hw))
        self.config = ComposerConfig(num_steps=args.steps, max_refine_steps=args.max_refine_steps,
                                     early_stop_from=5 if args.early_stop else 10**9, loss_level=args.loss_level)
        self.log: dict[str, Any] = {}

    def check_layout(self) -> dict[str, Any]:
        """Refuse a size at which a box is empty on the loss grid; report empty boxes on other attention grids."""
        latent_hw = self.latent_hw
        loss_empty = empty_boxes(self.boxes, latent_hw, [self.args.loss_level])
        if loss_empty:
            h, w = grid_at_level(latent_hw, self.args.loss_level)
            raise SystemExit(f"{self.height}x{self.width}, {self.regions} regions: region(s) "
                             f"{sorted(r for r, _ in loss_empty)} are empty on the {h}x{w} loss grid; the guidance "
                             "would do nothing there. Use a larger size or fewer regions.")
        unet = self.pipe.unet
        levels = sorted({attention_level(unet, n) for n in cross_attention_layers(unet)})
        return {
            "loss_grid_hw": list(grid_at_level(latent_hw, self.args.loss_level)),
            "empty_on_attention_grids": [
                {"region": r, "grid_hw": list(grid_at_level(latent_hw, level))}
                for r, level in empty_boxes(self.boxes, latent_hw, levels)
            ],
        }

    def _decode(self, latents: torch.Tensor) -> None:
        if self.args.decode:
            with torch.no_grad():
                self.pipe.vae.decode(latents / self.pipe.vae.config.scaling_factor, return_dict=False)

    def plain(self) -> None:
        """diffusers' pipeline: prompt encoding and CFG sampling (and decoding with --decode)."""
        latents = self.pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=self.args.steps, guidance_scale=7.5,
                            latents=self.noise.clone().to(self.device, self.dtype), height=self.height,
                            width=self.width, output_type="latent").images
        self._decode(latents)

    def composer(self) -> None:
        """LoRA-Composer: text stage, re-initialization, refinement and CFG sampling (and decoding with --decode)."""
        layout = prepare_layout(self.pipe, PROMPT, NEGATIVE, self.inputs)
        scheduler = type(self.pipe.scheduler).from_config(self.pipe.scheduler.config)
        result = composer_sampler(self.pipe.unet, scheduler, layout, self.config)(self.noise)
        self.log = result.log
        self._decode(result.latents)

    def expected_counts(self) -> dict[str, tuple[int, int]]:
        """(UNet forwards, backward passes) each side must take (full refinement window, no early stop)."""
        refine = min(self.args.max_refine_steps, self.args.steps)
        return {"plain": (self.args.steps, 0), "composer": (1 + refine + self.args.steps, refine)}


def make_pipeline(args: argparse.Namespace, toy_unet: str | None = None) -> StableDiffusionPipeline:
    """The model under test on the requested device and dtype (``toy_unet``: the toy world with that UNet size)."""
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    if toy_unet:
        pipe = build_toy_pipeline(toy_unet)
    elif args.full_sd15:
        pipe = build_sd15_pipeline(device, dtype)
    else:
        pipe = build_random_pipeline()
    if not args.full_sd15 and (device.type != "cpu" or dtype != torch.float32):
        pipe = pipe.to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(fn: Callable[[], None], device: torch.device) -> dict[str, float]:
    """Run ``fn`` once: CPU and wall seconds; on CUDA also peak reserved and allocated GiB."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    _sync(device)
    cpu, wall = time.process_time(), time.perf_counter()
    fn()
    _sync(device)
    out = {"cpu_s": time.process_time() - cpu, "wall_s": time.perf_counter() - wall}
    if device.type == "cuda":
        out["peak_reserved_gib"] = torch.cuda.max_memory_reserved() / 2**30
        out["peak_allocated_gib"] = torch.cuda.max_memory_allocated() / 2**30
    return out


def _rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # Linux: KiB


def run_side(args: argparse.Namespace) -> None:
    """Child process of the CPU memory measurement: one side, once; prints peak RSS before and after."""
    torch.set_num_threads(args.threads)
    size = parse_size(args.sizes[0])
    bench = Bench(args, size, args.regions[0], toy_unet=args.toy_unet[0] if args.toy_unet else None)
    before = _rss_gib()
    getattr(bench, args.side)()
    print(json.dumps({"rss_after_setup_gib": before, "peak_rss_gib": _rss_gib()}))


def side_memory(args: argparse.Namespace, size: str, regions: int, side: str,
                toy_unet: str | None = None) -> dict[str, float]:
    """Peak RSS of a fresh process that builds the model and runs one side once."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--side", side, "--sizes", size, "--regions", str(regions),
            "--steps", str(args.steps), "--max-refine-steps", str(args.max_refine_steps),
            "--loss-level", str(args.loss_level), "--device", args.device, "--dtype", args.dtype,
            "--threads", str(args.threads), "--decode" if args.decode else "--no-decode"]
    argv += ["--full-sd15"] if args.full_sd15 else []
    argv += ["--toy-unet", toy_unet] if toy_unet else []
    argv += ["--early-stop"] if args.early_stop else []
    done = subprocess.run(argv, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_size(text: str) -> tuple[int, int]:
    """``"512x1024"`` -> ``(512, 1024)`` (height x width)."""
    height, width = (int(v) for v in text.lower().split("x"))
    return height, width


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    info: dict[str, Any] = {"cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
                            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                            "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()]}
    try:
        info["cpu"] = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                           if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def bench_setting(args: argparse.Namespace, size_text: str, regions: int, counters: Counters | None,
                  pipe: StableDiffusionPipeline, toy_unet: str | None = None) -> dict[str, Any]:
    """Warm up both sides, then ``--repeats`` interleaved pairs; counts checked on every run."""
    bench = Bench(args, parse_size(size_text), regions, pipe)
    result: dict[str, Any] = {"model": model_name(args, toy_unet), "size_hw": list(parse_size(size_text)),
                              "regions": regions, **bench.check_layout()}
    counters = counters or Counters(pipe.unet)
    expected = bench.expected_counts()
    sides = {"plain": bench.plain, "composer": bench.composer}
    runs: dict[str, list[dict[str, float]]] = {"plain": [], "composer": []}
    for repeat in range(args.repeats + 1):  # repeat 0 is the warm-up of both sides
        for name, fn in sides.items():
            counters.take()
            measured = measure(fn, bench.device)
            counts = counters.take()
            if not args.early_stop and counts != expected[name]:
                raise SystemExit(f"{name}: expected (forwards, backwards) = {expected[name]}, counted {counts}")
            if name == "composer":
                result["unet_forwards"], result["backward_passes"] = counts
                result["refine_steps_logged"] = bench.log.get("refine_steps")
            if repeat:
                runs[name].append(measured)
    key = "cpu_s" if bench.device.type == "cpu" else "wall_s"
    for name, values in runs.items():
        result[f"{name}_{key}"] = round(statistics.median(v[key] for v in values), 3)
        result[f"{name}_{key}_all"] = [round(v[key], 3) for v in values]
        if bench.device.type == "cuda":
            result[f"{name}_peak_reserved_gib"] = round(max(v["peak_reserved_gib"] for v in values), 3)
            result[f"{name}_peak_allocated_gib"] = round(max(v["peak_allocated_gib"] for v in values), 3)
    ratios = [c[key] / p[key] for p, c in zip(runs["plain"], runs["composer"], strict=True)]
    result["ratio"] = round(result[f"composer_{key}"] / result[f"plain_{key}"], 3)
    result["pair_ratios"] = [round(r, 3) for r in ratios]
    if args.memory and bench.device.type == "cpu":
        for name in sides:
            mem = side_memory(args, size_text, regions, name, toy_unet)
            result[f"{name}_peak_rss_gib"] = round(mem["peak_rss_gib"], 3)
            result["rss_after_setup_gib"] = round(mem["rss_after_setup_gib"], 3)
    return result


def model_name(args: argparse.Namespace, toy_unet: str | None) -> str:
    """How results name the model under test."""
    if toy_unet:
        return f"toy world, {toy_unet} UNet (random weights)"
    return "full SD1.5 architecture (random weights)" if args.full_sd15 else "tiny SD1.5 layout"


def ratios_to_first_model(results: list[dict[str, Any]], key: str) -> list[str]:
    """LoRA-Composer's time under each later model over the first model's, per (size, regions) of this run."""
    first = results[0]["model"] if results else None
    baseline = {(tuple(r["size_hw"]), r["regions"]): r[f"composer_{key}"] for r in results if r["model"] == first}
    return [f"{r['model']} / {first}, {r['size_hw'][0]}x{r['size_hw'][1]}, {r['regions']} regions: LoRA-Composer "
            f"{r[f'composer_{key}'] / baseline[(tuple(r['size_hw']), r['regions'])]:.2f}×"
            for r in results if r["model"] != first]


def table(results: list[dict[str, Any]], key: str) -> str:
    """The markdown table of all settings."""
    unit = "CPU s" if key == "cpu_s" else "s"
    lines = [f"| model | size | regions | plain {unit} | LoRA-Composer {unit} | ratio (pairs) | forwards / backwards | "
             "peak memory plain / composer |", "|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "plain_peak_reserved_gib" in r:
            mem = f"{r['plain_peak_reserved_gib']} / {r['composer_peak_reserved_gib']} GiB reserved"
        elif "plain_peak_rss_gib" in r:
            mem = f"{r['plain_peak_rss_gib']} / {r['composer_peak_rss_gib']} GiB RSS"
        else:
            mem = "-"
        pairs = ", ".join(f"{p:.2f}" for p in r["pair_ratios"])
        lines.append(f"| {r['model']} | {r['size_hw'][0]}x{r['size_hw'][1]} | {r['regions']} | {r[f'plain_{key}']} | "
                     f"{r[f'composer_{key}']} | **{r['ratio']:.2f}×** ({pairs}) | {r['unet_forwards']} / "
                     f"{r['backward_passes']} | {mem} |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full-sd15", action="store_true", help="full SD1.5 architecture (random weights)")
    parser.add_argument("--toy-unet", nargs="+", choices=list(UNET_SIZES),
                        help="the toy world's architecture (random weights) with these UNet sizes, one after another")
    parser.add_argument("--sizes", "--size", nargs="+", default=["256x256"], help="HxW in pixels")
    parser.add_argument("--regions", type=int, nargs="+", default=[4])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--max-refine-steps", type=int, default=26)
    parser.add_argument("--early-stop", action="store_true", help="official early stop (default: full window)")
    parser.add_argument("--loss-level", type=int, default=4)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=["float32", "float16", "bfloat16"],
                        help="default: float16 on cuda, float32 on the CPU")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads on the CPU")
    parser.add_argument("--repeats", type=int, default=3, help="timed interleaved pairs after the warm-up")
    parser.add_argument("--decode", action=argparse.BooleanOptionalAction, default=None,
                        help="VAE-decode on both sides (default: on for cuda, off on the CPU)")
    parser.add_argument("--memory", action=argparse.BooleanOptionalAction, default=True,
                        help="CPU: peak RSS per side in separate processes")
    parser.add_argument("--json", help="also write all results to this file")
    parser.add_argument("--side", choices=["plain", "composer"], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.full_sd15 and args.toy_unet:
        parser.error("--full-sd15 and --toy-unet name two different models; give one")
    args.dtype = args.dtype or ("float16" if args.device.startswith("cuda") else "float32")
    args.decode = args.device.startswith("cuda") if args.decode is None else args.decode
    return args


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    """Run every (size, regions) setting; print and return the results."""
    args = parse_args(argv)
    if args.side:
        run_side(args)
        return []
    if args.device == "cpu":
        torch.set_num_threads(args.threads)
    header = {"models": [model_name(args, toy_unet) for toy_unet in args.toy_unet or [None]],
              "steps": args.steps, "max_refine_steps": args.max_refine_steps, "early_stop": args.early_stop,
              "dtype": args.dtype, "device": args.device, "decode": args.decode, "machine_before": machine()}
    print(json.dumps(header))
    results = []
    for toy_unet in args.toy_unet or [None]:
        pipe = make_pipeline(args, toy_unet)
        counters = Counters(pipe.unet)
        for size in args.sizes:
            for regions in args.regions:
                result = bench_setting(args, size, regions, counters, pipe, toy_unet)
                print(json.dumps(result), flush=True)
                results.append(result)
    header["machine_after"] = machine()
    key = "cpu_s" if args.device == "cpu" else "wall_s"
    print(table(results, key))
    for line in ratios_to_first_model(results, key):
        print(line)
    print(json.dumps({"machine_after": header["machine_after"]}))
    if args.json:
        Path(args.json).write_text(json.dumps({"header": header, "results": results}, indent=1), encoding="utf-8")
    return results


if __name__ == "__main__":
    main()
