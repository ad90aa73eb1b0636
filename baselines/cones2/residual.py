"""Cones2's per-concept residual token embedding: training (text-encoder fine-tune) and extraction.

Upstream ``train_cones2.py``: fine-tune the whole text encoder (UNet and VAE frozen) on the
concept's images with the raw class word as prompt; loss = diffusion MSE
+ ``loss_rate_first * ||e_BOS - e0_BOS||`` + ``loss_rate_second * ||e[1+n:] - e0[1+n:]||`` with e0
the encoder output at the first step. The residual is the mean over 27 templates of (tuned - original)
text-encoder output at the class word's ``n`` token positions: a ``[n, hidden]`` tensor.

Batches: upstream's script defaults to ``--train_batch_size 4`` (its README command uses 1). It slices
the preservation terms after ``torch.squeeze`` of the ``[B, 77, hidden]`` encoder output, so with
``B > 1`` the slices ``[:1]`` and ``[1+n:]`` index the *batch*, not the tokens: the first term is the
whole first sample (class word included) and the second the samples ``1+n ..``. :func:`preservation_loss`
reproduces that; see ``batch_size`` of :func:`train_residual`.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, StableDiffusionPipeline
from PIL import Image

from bench.safeload import WeightsFileError, load_weights_only
from bench.spec import Concept

PROMPT_TEMPLATES = (
    "a photo of a {}",
    "a rendering of a {}",
    "a cropped photo of the {}",
    "the photo of a {}",
    "a photo of a clean {}",
    "a photo of a dirty {}",
    "a dark photo of the {}",
    "a photo of my {}",
    "a photo of the cool {}",
    "a close-up photo of a {}",
    "a bright photo of the {}",
    "a cropped photo of a {}",
    "a photo of the {}",
    "a good photo of the {}",
    "a photo of one {}",
    "a close-up photo of the {}",
    "a rendition of the {}",
    "a photo of the clean {}",
    "a rendition of a {}",
    "a photo of a nice {}",
    "a good photo of a {}",
    "a photo of the nice {}",
    "a photo of the small {}",
    "a photo of the weird {}",
    "a photo of the large {}",
    "a photo of a cool {}",
    "a photo of a small {}",
)


def _tokenize(tokenizer: object, text: str, device: torch.device) -> torch.Tensor:
    return tokenizer(  # type: ignore[operator]
        text,
        padding="max_length",
        max_length=tokenizer.model_max_length,  # type: ignore[attr-defined]
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device)


def _image_tensor(image: Image.Image, size: int, generator: torch.Generator) -> torch.Tensor:
    """Resize the shorter side to ``size``, random-crop ``size`` (seeded), scale to [-1, 1]."""
    image = image.convert("RGB")
    scale = size / min(image.size)
    image = image.resize(
        (max(size, round(image.width * scale)), max(size, round(image.height * scale))), Image.BILINEAR
    )
    left = int(torch.randint(0, image.width - size + 1, (1,), generator=generator))
    top = int(torch.randint(0, image.height - size + 1, (1,), generator=generator))
    image = image.crop((left, top, left + size, top + size))
    pixels = torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).reshape(size, size, 3)
    return pixels.permute(2, 0, 1).float().div(127.5).sub(1.0).unsqueeze(0)


def class_word_length(tokenizer: object, class_word: str) -> int:
    """Number of BPE tokens of the class word (upstream ``--token_num``)."""
    return len(tokenizer(class_word).input_ids) - 2  # type: ignore[operator]


@torch.no_grad()
def extract_residual(
    tokenizer: object, original: torch.nn.Module, tuned: torch.nn.Module, class_word: str, device: torch.device
) -> torch.Tensor:
    """Mean over the 27 templates of (tuned - original) outputs at the class word's positions: ``[n, hidden]``."""
    n = class_word_length(tokenizer, class_word)
    first = int(_tokenize(tokenizer, class_word, device)[0, 1])
    total = None
    for template in PROMPT_TEMPLATES:
        ids = _tokenize(tokenizer, template.format(class_word), device)
        index = int(torch.where(ids[0] == first)[0][0])
        delta = tuned(ids)[0][0, index : index + n] - original(ids)[0][0, index : index + n]
        total = delta if total is None else total + delta
    assert total is not None
    return (total / len(PROMPT_TEMPLATES)).float().cpu()


def preservation_loss(
    target: torch.Tensor, hidden: torch.Tensor, token_num: int, rate_first: float, rate_second: float
) -> torch.Tensor:
    """Upstream's embedding-preservation loss for encoder outputs ``[B, 77, hidden]`` (``train_cones2.py``).

    ``rate_first * ||sq(e0)[:1] - sq(e)[:1]|| + rate_second * ||sq(e0)[1+n:] - sq(e)[1+n:]||`` with
    ``sq = torch.squeeze``, exactly as upstream writes it: for ``B = 1`` the slices are tokens (BOS, and
    everything after the class word); for ``B > 1`` they are batch samples. ``target`` must have
    ``hidden``'s shape.
    """
    t, h = torch.squeeze(target), torch.squeeze(hidden)
    first = torch.norm(t[:1] - h[:1], 2)
    second = torch.norm(t[1 + token_num :] - h[1 + token_num :], 2)
    return rate_first * first + rate_second * second


def epoch_batches(count: int, batch_size: int, generator: torch.Generator) -> list[list[int]]:
    """One epoch of ``DataLoader(shuffle=True, batch_size=batch_size)``: a permutation cut into batches.

    As upstream (``drop_last`` off), the last batch is smaller when ``batch_size`` does not divide ``count``.
    """
    order = torch.randperm(count, generator=generator).tolist()
    return [order[i : i + batch_size] for i in range(0, count, batch_size)]


@torch.enable_grad()
def train_residual(
    pipe: StableDiffusionPipeline,
    concept: Concept,
    images: Sequence[str | Path | Image.Image],
    steps: int,
    out: str | Path | None = None,
    *,
    learning_rate: float = 5e-6,
    resolution: int | None = None,
    loss_rate_first: float = 1e-2,
    loss_rate_second: float = 1e-3,
    max_grad_norm: float = 1.0,
    seed: int = 0,
    batch_size: int = 1,
) -> torch.Tensor:
    """Fine-tune a copy of the pipeline's text encoder on the concept's images and return its residual.

    README settings by default (lr 5e-6 constant, batch 1, preservation rates 1e-2 / 1e-3); upstream
    uses 4000 steps. ``resolution`` defaults to the UNet's native size. The pipeline is not modified.
    ``out``: where to ``torch.save`` the residual tensor (upstream's ``residual.pt`` format).

    ``batch_size`` (upstream ``--train_batch_size``, script default 4): each step takes the next batch of
    a shuffled epoch (the last batch of an epoch may be smaller), draws a timestep and noise per image,
    and applies :func:`preservation_loss` with upstream's batch slicing. e0 is the first step's output;
    a smaller batch is compared with its first rows (upstream broadcasts the first batch's e0 against
    it, which mismatches the slices or raises).
    """
    if not images:
        raise ValueError(f"Cones2 training for concept '{concept.id}': expected at least one reference image")
    device = pipe.unet.device
    tokenizer = pipe.tokenizer
    resolution = resolution or pipe.unet.config.sample_size * pipe.vae_scale_factor
    generator = torch.Generator("cpu").manual_seed(seed)
    noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    text_encoder = copy.deepcopy(pipe.text_encoder).to(device, torch.float32).train()
    text_encoder.requires_grad_(True)
    optimizer = torch.optim.AdamW(
        text_encoder.parameters(), lr=learning_rate, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8
    )
    if batch_size < 1:
        raise ValueError(f"Cones2 training for concept '{concept.id}': batch_size must be >= 1, got {batch_size}")
    n = class_word_length(tokenizer, concept.class_name)
    ids = _tokenize(tokenizer, concept.class_name, device)
    loaded = [im if isinstance(im, Image.Image) else Image.open(im) for im in images]
    target_embed = None
    batches: list[list[int]] = []
    for _ in range(steps):
        if not batches:  # a new shuffled epoch, as upstream's DataLoader(shuffle=True)
            batches = epoch_batches(len(loaded), batch_size, generator)
        batch = batches.pop(0)
        pixels = torch.cat([_image_tensor(loaded[i], resolution, generator) for i in batch])
        with torch.no_grad():
            dist = pipe.vae.encode(pixels.to(device, pipe.vae.dtype)).latent_dist
            latents = dist.sample(generator=generator).float() * pipe.vae.config.scaling_factor
        noise = torch.randn(latents.shape, generator=generator).to(device)
        timesteps = torch.randint(
            0, noise_scheduler.config.num_train_timesteps, (len(batch),), generator=generator
        ).to(device)
        noisy = noise_scheduler.add_noise(latents, noise, timesteps)
        hidden = text_encoder(ids.expand(len(batch), -1))[0]
        if target_embed is None:
            target_embed = hidden.detach()
        loss_embed = preservation_loss(target_embed[: len(batch)], hidden, n, loss_rate_first, loss_rate_second)
        pred = pipe.unet(noisy.to(pipe.unet.dtype), timesteps, hidden.to(pipe.unet.dtype)).sample.float()
        if noise_scheduler.config.prediction_type == "v_prediction":
            target = noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        loss = F.mse_loss(pred, target) + loss_embed
        loss.backward()
        torch.nn.utils.clip_grad_norm_(text_encoder.parameters(), max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    text_encoder.eval()
    residual = extract_residual(tokenizer, pipe.text_encoder, text_encoder, concept.class_name, device)
    if out is not None:
        save_residual(residual, out)
    return residual


def save_residual(residual: torch.Tensor, path: str | Path) -> None:
    """Save a residual as upstream does (a bare tensor through ``torch.save``), atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(residual.detach().cpu(), tmp)
    tmp.replace(path)


def load_residual(path: str | Path, hidden_size: int, length: int, where: str = "residual") -> torch.Tensor:
    """Load a residual (``torch.load(weights_only=True)``) and check it is ``[length, hidden_size]``."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(
            f"{where}: '{path}' does not exist; expected a Cones2 residual.pt (train one with `bench cones2-train`)"
        )
    try:
        tensor = load_weights_only(path)
    except WeightsFileError as err:  # names the file; never torch's advice to load it unsafely
        expected = "a Cones2 residual (a bare tensor saved by `bench cones2-train`)"
        raise ValueError(f"{where}: '{path}': expected {expected}; {err.reason}") from err
    if not isinstance(tensor, torch.Tensor):
        raise ValueError(f"{where}: '{path}' holds a {type(tensor).__name__}; expected a bare tensor")
    tensor = tensor.reshape(-1, tensor.shape[-1]) if tensor.ndim else tensor
    if tuple(tensor.shape) != (length, hidden_size):
        raise ValueError(
            f"{where}: '{path}' has shape {list(tensor.shape)}; expected [{length}, {hidden_size}] "
            "(class-word tokens x text-encoder width of this base model)"
        )
    return tensor.float()
