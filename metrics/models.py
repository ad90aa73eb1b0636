"""Embedding models behind one small interface: open_clip CLIP and a DINOv2 ViT, from the model front door.

The models come from :func:`bench.models.create` (kinds ``clip`` and ``dino``): a built-in
(``builtin:NAME``, e.g. the random-weight or the toy world's CLIP) or a local model, which the loaders
below read (an open_clip model name with a local weights file; a local DINOv2 folder). Every embedder
has a ``fingerprint`` (model, weights hash) that score rows and the reference-embedding cache are
keyed by.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from bench.models import ImageModel, ImageTextModel, ModelError, create
from bench.safeload import WeightsFileError, error_text, load_weights_only

RANDOM_CLIP = "builtin:random-clip"
RANDOM_DINO = "builtin:random-dino"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def file_hash(path: str | Path, length: int = 16) -> str:
    """The first ``length`` hex digits of a file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def load_open_clip(ref: str, *, where: str, weights: str | Path | None = None, random_init: bool = False
                   ) -> ImageTextModel:
    """The ``clip`` loader: open_clip model ``ref`` with a local weights file (``.pt``/``.bin``/``.safetensors``).

    ``random_init`` (benchmark scripts only) builds the architecture with seeded random weights instead.
    """
    import open_clip

    if random_init and weights is None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net, _, preprocess = open_clip.create_model_and_transforms(ref, pretrained=None)
        return ImageTextModel(net, preprocess, open_clip.get_tokenizer(ref), ref, "random-init seed 0")
    if weights is None or not Path(weights).is_file():
        raise ModelError(
            f"{where}: CLIP weights '{weights}': expected a local .pt/.bin/.safetensors file for open_clip model "
            f"'{ref}' (the bench never downloads weights)"
        )
    if ref not in open_clip.list_models():
        raise ModelError(
            f"{where}: CLIP model '{ref}': expected an open_clip model name such as 'ViT-B-32-quickgelu' "
            "(see open_clip.list_models()) or a built-in CLIP such as builtin:toy-clip"
        )
    _check_weights_file(Path(weights), where)
    try:
        net, _, preprocess = open_clip.create_model_and_transforms(ref, pretrained=str(weights))
    except Exception as err:  # open_clip raises RuntimeError, KeyError, AttributeError, ... on foreign files
        raise ModelError(
            f"{where}: CLIP weights '{weights}': expected the weights of open_clip model '{ref}' "
            f"({error_text(err)})"
        ) from err
    return ImageTextModel(net, preprocess, open_clip.get_tokenizer(ref), ref, f"sha256:{file_hash(weights)}")


def _check_weights_file(path: Path, where: str) -> None:
    """Open a CLIP weights file safely before open_clip does: a file that carries code, or a broken one, is
    refused with its name (torch files through ``torch.load(weights_only=True)``; nothing in them is run)."""
    if path.suffix.lower() in (".npz", ".npy"):  # big_vision weights: numpy reads them without pickle
        return
    if path.suffix.lower() == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt", device="cpu"):
                pass
        except Exception as err:  # SafetensorError, OSError: a broken header
            raise ModelError(f"{where}: CLIP weights '{path}': expected a readable .safetensors file "
                             f"({error_text(err)})") from err
        return
    try:
        load_weights_only(path, mmap=True)
    except WeightsFileError as err:
        expected = "a state dict of plain tensors" if err.carries_code else "a readable torch weights file"
        raise ModelError(f"{where}: CLIP weights '{path}': expected {expected}; {err.reason}") from err


def load_dino_folder(ref: str, *, where: str) -> ImageModel:
    """The ``dino`` loader: a local DINOv2 folder (``config.json`` and weights, as ``save_pretrained`` writes)."""
    from transformers import Dinov2Model

    folder = Path(ref)
    files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
    if not (folder / "config.json").is_file() or not files:
        raise ModelError(
            f"{where}: DINO model '{ref}': expected a local folder with config.json and model weights "
            "(e.g. facebook/dinov2-small saved with save_pretrained)"
        )
    net = Dinov2Model.from_pretrained(folder, local_files_only=True)
    return ImageModel(net, f"dinov2:{ref}", f"sha256:{file_hash(files[0])}")


class ClipEmbedder:
    """An open_clip model with its evaluation transform and tokenizer; outputs L2-normalised embeddings."""

    def __init__(self, model: str = RANDOM_CLIP, weights: str | Path | None = None, device: str = "cpu",
                 **options: Any):
        options = {**options, "weights": weights} if weights is not None else options
        parts: ImageTextModel = create(model, "clip", where="CLIP model", **options)
        self.model = parts.model.eval().to(device)
        self.preprocess: Callable[[Image.Image], torch.Tensor] = parts.preprocess
        self.tokenizer = parts.tokenizer
        self.device = device
        self.name = parts.name
        self.weights = parts.weights
        size = self.model.visual.image_size
        side = size[0] if isinstance(size, tuple | list) else size
        self.preprocess_desc = f"resize {side} bicubic short side + center crop {side}, CLIP mean/std"

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space: model name and weights."""
        return f"open_clip:{self.name}|{self.weights}"

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised image embeddings ``[N, D]`` (float32, CPU), one forward pass for the batch."""
        if not images:
            return torch.zeros(0, self.model.visual.output_dim)
        batch = torch.stack([self.preprocess(img) for img in images]).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_image(batch).float(), dim=-1).cpu()

    @torch.no_grad()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``[N, D]`` (float32, CPU); texts longer than the context are cut."""
        tokens = self.tokenizer(list(texts)).to(self.device)
        return torch.nn.functional.normalize(self.model.encode_text(tokens).float(), dim=-1).cpu()


class DinoEmbedder:
    """A DINOv2 ViT (transformers ``Dinov2Model``); the embedding is the CLS token."""

    def __init__(self, model: str | Path = RANDOM_DINO, device: str = "cpu"):
        from torchvision import transforms

        parts: ImageModel = create(str(model), "dino", where="DINO model")
        side = int(parts.model.config.image_size)
        resize = round(side * 256 / 224)
        self.preprocess = transforms.Compose(
            [
                transforms.Resize(resize, interpolation=transforms.InterpolationMode.BICUBIC),
                transforms.CenterCrop(side),
                transforms.Lambda(lambda img: img.convert("RGB")),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )
        self.preprocess_desc = f"resize {resize} bicubic short side + center crop {side}, ImageNet mean/std"
        self.model = parts.model.eval().to(device)
        self.device = device
        self.name = parts.name
        self.weights = parts.weights

    @property
    def fingerprint(self) -> str:
        """Identifies the embedding space: model name and weights."""
        return f"{self.name}|{self.weights}"

    @torch.no_grad()
    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised CLS embeddings ``[N, D]`` (float32, CPU)."""
        if not images:
            return torch.zeros(0, self.model.config.hidden_size)
        batch = torch.stack([self.preprocess(img) for img in images]).to(self.device)
        cls = self.model(pixel_values=batch).pooler_output
        return torch.nn.functional.normalize(cls.float(), dim=-1).cpu()
