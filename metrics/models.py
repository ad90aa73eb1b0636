"""Embedding models behind one small interface: open_clip CLIP and a DINOv2 ViT, local weights only.

``builtin:tiny-clip`` and ``builtin:tiny-dino`` are random-weight models with a fixed seed, for tests
and the offline demo; ``builtin:toy-clip`` is the toy world's trained CLIP (``toyworld/``). Every
embedder has a ``fingerprint`` (model, weights hash, preprocessing) that score rows and the
reference-embedding cache are keyed by.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import torch
from PIL import Image

TINY_CLIP = "builtin:tiny-clip"
TINY_DINO = "builtin:tiny-dino"
TOY_CLIP = "builtin:toy-clip"
TOY_CLIP_SCRIPT = "python -m toyworld.train clip"
_TINY_CLIP_CONFIG = Path(__file__).with_name("bench_tiny_clip.json")
_TINY_CLIP_NAME = _TINY_CLIP_CONFIG.stem  # open_clip names a registered config by its file stem
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def file_hash(path: str | Path, length: int = 16) -> str:
    """The first ``length`` hex digits of a file's SHA-256."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:length]


def _seeded(seed: int, build: Callable[[], torch.nn.Module]) -> torch.nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


@contextlib.contextmanager
def _root_logger_at(level: int) -> Iterator[None]:
    root = logging.getLogger()
    previous = root.level
    root.setLevel(level)
    try:
        yield
    finally:
        root.setLevel(previous)


def toy_clip_files() -> tuple[Path, Path]:
    """The toy CLIP's open_clip config (registered under its file stem) and its default weights file."""
    import toyworld

    folder = Path(toyworld.__file__).parent
    return folder / "lcbench_toy_clip.json", folder / "weights" / "clip.safetensors"


def _load_toy_clip_state(net: torch.nn.Module, path: Path) -> None:
    """Load an fp16 safetensors open_clip state dict into ``net`` as float32."""
    from safetensors.torch import load_file

    net.load_state_dict({k: v.to(torch.float32) for k, v in load_file(str(path)).items()})


class ClipEmbedder:
    """An open_clip model with its evaluation transform and tokenizer; outputs L2-normalised embeddings."""

    def __init__(self, model: str = TINY_CLIP, weights: str | Path | None = None, device: str = "cpu", seed: int = 0):
        import open_clip

        name = model
        state_file: Path | None = None  # weights loaded here rather than by open_clip (toy CLIP)
        if model == TINY_CLIP:
            open_clip.add_model_config(_TINY_CLIP_CONFIG)
            name = _TINY_CLIP_NAME
        elif model == TOY_CLIP:
            config, default_weights = toy_clip_files()
            if not config.is_file():
                raise FileNotFoundError(f"CLIP model '{TOY_CLIP}': expected its open_clip config at '{config}'")
            open_clip.add_model_config(config)
            name = config.stem
            state_file = Path(weights) if weights is not None else default_weights
            weights = None  # open_clip builds the model only; the state dict is loaded below
            if not state_file.is_file():
                raise FileNotFoundError(
                    f"CLIP weights '{state_file}' of '{TOY_CLIP}' are missing; expected the output of "
                    f"`{TOY_CLIP_SCRIPT}` (an open_clip state dict in safetensors)"
                )
        if weights is not None and not Path(weights).is_file():
            raise FileNotFoundError(
                f"CLIP weights '{weights}': expected a local .pt/.bin/.safetensors file for open_clip model '{model}'"
            )
        # open_clip warns (on the root logger) that no pretrained weights were loaded; the toy CLIP's come next.
        quiet = _root_logger_at(logging.ERROR) if state_file is not None else contextlib.nullcontext()
        try:
            with quiet:
                net, _, preprocess = _seeded(
                    seed,
                    lambda: open_clip.create_model_and_transforms(
                        name, pretrained=str(weights) if weights is not None else None
                    ),
                )
        except RuntimeError as err:
            raise ValueError(
                f"CLIP model '{model}': expected an open_clip model name such as 'ViT-B-32-quickgelu' "
                f"(see open_clip.list_models()), '{TINY_CLIP}' or '{TOY_CLIP}'"
            ) from err
        if state_file is not None:
            _load_toy_clip_state(net, state_file)
            weights = state_file
        self.model = net.eval().to(device)
        self.preprocess: Callable[[Image.Image], torch.Tensor] = preprocess
        self.tokenizer = open_clip.get_tokenizer(name)
        self.device = device
        self.name = model
        self.weights = f"sha256:{file_hash(weights)}" if weights is not None else f"random-init seed {seed}"
        size = net.visual.image_size
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
    """A DINOv2 ViT (transformers ``Dinov2Model``) from a local folder; the embedding is the CLS token."""

    def __init__(self, model: str | Path = TINY_DINO, device: str = "cpu", seed: int = 0):
        from torchvision import transforms
        from transformers import Dinov2Config, Dinov2Model

        if str(model) == TINY_DINO:
            config = Dinov2Config(
                hidden_size=32,
                num_hidden_layers=2,
                num_attention_heads=2,
                intermediate_size=64,
                image_size=64,
                patch_size=16,
            )
            net = _seeded(seed, lambda: Dinov2Model(config))
            self.weights = f"random-init seed {seed}"
        else:
            folder = Path(model)
            files = sorted(folder.glob("*.safetensors")) + sorted(folder.glob("*.bin"))
            if not (folder / "config.json").is_file() or not files:
                raise FileNotFoundError(
                    f"DINO model '{model}': expected a local folder with config.json and model weights "
                    "(e.g. facebook/dinov2-small saved with save_pretrained)"
                )
            net = Dinov2Model.from_pretrained(folder, local_files_only=True)
            self.weights = f"sha256:{file_hash(files[0])}"
        side = int(net.config.image_size)
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
        self.model = net.eval().to(device)
        self.device = device
        self.name = f"dinov2:{model}"

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
