"""The toy world's models: SD1.x-architecture VAE, UNet and text encoder, and where their weights live.

The VAE downsamples 4x (64x64 images, 16x16x4 latents); the UNet has cross-attention at 16x16,
8x8 and 4x4; the text encoder is a 4-layer ``CLIPTextModel`` over the full CLIP BPE vocabulary.
Weights are committed as fp16 safetensors under ``toyworld/weights`` and loaded as fp32.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModel

from bench.tokenizer import build_clip_tokenizer, small_clip_text_config
from toyworld import SCHEDULE_NAMES, UNET_SIZE_NAMES, WEIGHTS_DIR

TEXT_DIM = 64


class MissingWeights(FileNotFoundError):
    """A toy-world weights file is not there; the message says which script makes it."""


def vae_config(scaling_factor: float = 0.5) -> dict:
    """A 3-level (4x) VAE: 64x64 images to 16x16x4 latents."""
    return dict(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 3,
        up_block_types=("UpDecoderBlock2D",) * 3,
        block_out_channels=(32, 64, 64),
        latent_channels=4,
        norm_num_groups=16,
        layers_per_block=1,
        sample_size=64,
        scaling_factor=scaling_factor,
    )


# Channels, heads and norm groups of the UNet's sizes: "small" is the committed world's (1.5 M parameters),
# "wide" has 5.8 M and trains 2.3x slower per step.
UNET_SIZES = dict(zip(UNET_SIZE_NAMES, (((32, 64, 64), 4, 16), ((64, 128, 128), 8, 32)), strict=True))


def unet_config(size: str = "small") -> dict:
    """A small UNet with cross-attention at 16x16, 8x8 and (mid block) 4x4, of one of :data:`UNET_SIZES`."""
    channels, heads, groups = UNET_SIZES[size]
    return dict(
        sample_size=16,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=channels,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TEXT_DIM,
        attention_head_dim=heads,
        norm_num_groups=groups,
    )


def text_config() -> CLIPTextConfig:
    """A 4-layer CLIP text encoder of width 64 over the SD1.5 vocabulary."""
    return small_clip_text_config(build_clip_tokenizer(), TEXT_DIM, intermediate=256, layers=4)


# The SD1.x betas, rescaled to zero terminal SNR, with v-prediction and trailing timesteps (Lin et al.,
# "Common Diffusion Noise Schedules and Sample Steps are Flawed"). On SD1.x's own schedule the last training
# step keeps 7 % of the latent, so a model learns to read the background from that remnant, and sampled from
# pure noise it ignores the prompted background (see the toy world's quality gates in the README). The committed
# toy weights are trained on this schedule.
ZERO_SNR_V = dict(prediction_type="v_prediction", rescale_betas_zero_snr=True, timestep_spacing="trailing",
                  steps_offset=1)  # trailing timesteps ignore the offset; 1 is what SD pipelines expect
# SD1.x's own: what earlier toy weights were trained on; weights without a stored schedule are read with it.
SD1_EPSILON = dict(prediction_type="epsilon", steps_offset=1, set_alpha_to_one=False)
SCHEDULES = dict(zip(SCHEDULE_NAMES, (SD1_EPSILON, ZERO_SNR_V), strict=True))


def scheduler(schedule: dict | None = None) -> DDIMScheduler:
    """DDIM on the SD1.x betas with ``schedule``'s options (default :data:`SD1_EPSILON`)."""
    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         **(SD1_EPSILON if schedule is None else schedule))


def weights_path(name: str, folder: Path | None = None) -> Path:
    """``<folder>/<name>.safetensors``, by default in the committed weights folder."""
    return (folder or WEIGHTS_DIR) / f"{name}.safetensors"


def save_weights(module: nn.Module, path: Path, metadata: dict[str, str] | None = None) -> None:
    """Write a module's state dict as fp16 safetensors, atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to(torch.float16).contiguous() for k, v in module.state_dict().items()}
    tmp = path.with_suffix(".tmp")
    save_file(state, str(tmp), metadata=metadata or {})
    tmp.replace(path)


def load_weights(module: nn.Module, path: Path, script: str) -> nn.Module:
    """Load fp16 safetensors into ``module`` as fp32; a missing file names the script that makes it."""
    if not path.is_file():
        raise MissingWeights(f"toy-world weights '{path}' are missing; expected the output of `{script}`")
    state = {k: v.to(torch.float32) for k, v in load_file(str(path)).items()}
    module.load_state_dict(state)
    return module


def build_vae(scaling_factor: float = 0.5) -> AutoencoderKL:
    """An untrained toy VAE."""
    return AutoencoderKL(**vae_config(scaling_factor))


def build_unet(size: str = "small") -> UNet2DConditionModel:
    """An untrained toy UNet of one of :data:`UNET_SIZES`."""
    return UNet2DConditionModel(**unet_config(size))


def build_text_encoder() -> CLIPTextModel:
    """An untrained toy text encoder."""
    return CLIPTextModel(text_config())


def load_vae(folder: Path | None = None) -> AutoencoderKL:
    """The trained VAE (its scaling factor is stored in the file's metadata)."""
    path = weights_path("vae", folder)
    if not path.is_file():
        raise MissingWeights(f"toy-world weights '{path}' are missing; expected the output of "
                             "`python -m toytrain vae`")
    from safetensors import safe_open

    with safe_open(str(path), "pt") as handle:
        scaling = float((handle.metadata() or {}).get("scaling_factor", "0.5"))
    return load_weights(build_vae(scaling), path, "python -m toytrain vae")


def _metadata(path: Path) -> dict[str, str]:
    from safetensors import safe_open

    if not path.is_file():
        return {}
    with safe_open(str(path), "pt") as handle:
        return handle.metadata() or {}


def stored_unet_config(path: Path) -> dict:
    """The UNet config a weights file was trained with (its ``config`` metadata), else :func:`unet_config`."""
    stored = _metadata(path).get("config")
    return json.loads(stored) if stored else unet_config()


def stored_schedule(path: Path) -> dict:
    """The noise schedule a UNet weights file was trained on (its ``schedule`` metadata), else :data:`SD1_EPSILON`."""
    stored = _metadata(path).get("schedule")
    return json.loads(stored) if stored else dict(SD1_EPSILON)


def unet_metadata(unet: UNet2DConditionModel, schedule: dict) -> dict[str, str]:
    """What a UNet weights file stores beside the weights: its config and the schedule it was trained on."""
    return {"config": json.dumps(dict(unet.config)), "schedule": json.dumps(schedule)}


def load_toy_pipeline(folder: Path | None = None) -> StableDiffusionPipeline:
    """The trained toy world as a plain diffusers ``StableDiffusionPipeline`` (DDIM, fp32)."""
    script = "python -m toytrain base"
    path = weights_path("unet", folder)
    unet = load_weights(UNet2DConditionModel.from_config(stored_unet_config(path)), path, script)
    text_encoder = load_weights(build_text_encoder(), weights_path("text_encoder", folder), script)
    return toy_pipeline(load_vae(folder), text_encoder, unet, stored_schedule(path))


def toy_pipeline(vae: AutoencoderKL, text_encoder: CLIPTextModel, unet: UNet2DConditionModel,
                 schedule: dict) -> StableDiffusionPipeline:
    """The toy world's modules, in eval mode, as a plain diffusers ``StableDiffusionPipeline`` (DDIM on
    ``schedule``)."""
    return StableDiffusionPipeline(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=build_clip_tokenizer(),
        unet=unet.eval(),
        scheduler=scheduler(schedule),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
