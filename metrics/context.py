"""What a metric gets besides the images: the spec, its assets, shared embedders and reference embeddings.

Reference embeddings are computed once per (embedder, view) and cached on disk by the hash of the
reference file (and its mask), so rescoring a run, or scoring another run of the same dataset with
the same cache folder, never re-embeds a reference image.

The CLIP model and weights not given explicitly come from the spec's ``evaluation`` section
(:func:`clip_choice`), else the random-weight ``builtin:random-clip``. The box judge is the one asked for
(``bench score --judge``, see :mod:`metrics.judges.spec`), else the spec's ``evaluation.classifier``.
Every model comes through the front door (:func:`bench.models.create`), loaded on first use: a metric
declares which it needs (``MetricSpec.needs``) and reads it with :meth:`ScoreContext.resource`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, TypeVar

import torch
from PIL import Image
from safetensors.torch import load_file
from safetensors.torch import save as save_bytes

from bench.models import create
from bench.spec import Concept, DatasetSpec
from bench.store import atomic_write_bytes
from metrics.crops import reference_view
from metrics.models import RANDOM_CLIP, RANDOM_DINO, ClipEmbedder, DinoEmbedder, file_hash

RESOURCES = ("clip", "dino", "box_judge", "dataset_judge")
MEMO_SIZE = 512  # results kept by ScoreContext.memo (more than one scoring batch of images)
T = TypeVar("T")


class Embedder(Protocol):
    """Anything that turns images into L2-normalised embeddings."""

    fingerprint: str

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """``[N, D]`` embeddings."""
        ...


class ReferenceSource(Protocol):
    """The part of ``bench.assets.AssetResolver`` metrics use."""

    def reference_images(self, concept_id: str) -> list[Path]:
        """The concept's reference image files."""
        ...

    def mask_images(self, concept_id: str) -> list[Path]:
        """The concept's reference masks (same file stems as the references), possibly empty."""
        ...


def clip_choice(
    spec: DatasetSpec, clip_model: str | None = None, clip_weights: str | Path | None = None
) -> tuple[str, str | Path | None]:
    """The (model, weights) to score with: explicit values first, then the spec's ``evaluation``, then tiny CLIP.

    The spec's weights go with the spec's model: they are used only when no other model is asked for.
    """
    evaluation = spec.evaluation
    model = clip_model or evaluation.clip_model or RANDOM_CLIP
    if clip_weights is None and evaluation.clip_weights is not None and model == (evaluation.clip_model or RANDOM_CLIP):
        clip_weights = spec.resolve_ref(evaluation.clip_weights)
    return model, clip_weights


class ScoreContext:
    """Shared resources of one scoring pass; embedders load lazily, once."""

    def __init__(
        self,
        spec: DatasetSpec,
        references: ReferenceSource,
        *,
        clip_model: str | None = None,
        clip_weights: str | Path | None = None,
        dino_model: str | Path = RANDOM_DINO,
        device: str = "cpu",
        cache_dir: Path | None = None,
        judge: str | None = None,
    ):
        self.spec = spec
        self.judge = judge
        self.references = references
        self.clip_model, self.clip_weights = clip_choice(spec, clip_model, clip_weights)
        self.dino_model = dino_model
        self.device = device
        self.cache_dir = cache_dir
        self._embedders: dict[str, Any] = {}
        self._refs: dict[tuple[str, str, str], torch.Tensor] = {}
        self._memo: dict[tuple[Any, ...], Any] = {}
        self.reference_embeds = 0  # reference images actually run through a model (cache misses)

    def clip(self) -> ClipEmbedder:
        """The CLIP embedder, loaded on first use."""
        if "clip" not in self._embedders:
            self._embedders["clip"] = ClipEmbedder(self.clip_model, self.clip_weights, device=self.device)
        return self._embedders["clip"]

    def dino(self) -> DinoEmbedder:
        """The DINO embedder, loaded on first use."""
        if "dino" not in self._embedders:
            self._embedders["dino"] = DinoEmbedder(self.dino_model, device=self.device)
        return self._embedders["dino"]

    def box_judge(self) -> Any:
        """The box judge asked for (``judge``), else the spec's (``evaluation.classifier``); loaded on first use."""
        if self.judge is None:
            return self.dataset_judge()
        if "box_judge" not in self._embedders:
            from metrics.judges.spec import build_judge

            self._embedders["box_judge"] = build_judge(self.judge, self, where="--judge")
        return self._embedders["box_judge"]

    def dataset_judge(self) -> Any:
        """The spec's box judge (``evaluation.classifier``: a built-in or a weights file), loaded on first use."""
        if "dataset_judge" not in self._embedders:
            ref = self.spec.evaluation.classifier
            where = f"{self.spec.path}: field 'evaluation.classifier'"
            if ref is None:
                raise ValueError(
                    f"{where}: expected a per-box judge such as 'builtin:toy-classifier' (the vanishing and "
                    "confusion metrics need one; the spec has no evaluation.classifier, and no --judge was given)"
                )
            self._embedders["dataset_judge"] = create(self.spec.resolve_ref(ref), "box_judge", where=where)
        return self._embedders["dataset_judge"]

    def resource(self, name: str) -> Any:
        """A model a metric declared it needs (``clip``, ``dino``, ``box_judge``, ``dataset_judge``), loaded once."""
        if name not in RESOURCES:
            raise ValueError(f"metric resource '{name}': expected one of {list(RESOURCES)}")
        loaders = {"clip": self.clip, "dino": self.dino, "box_judge": self.box_judge,
                   "dataset_judge": self.dataset_judge}
        return loaders[name]()

    def memo(self, key: tuple[Any, ...], compute: Callable[[], T]) -> T:
        """``compute()``, remembered under ``key`` for the next calls (the last :data:`MEMO_SIZE` keys):
        metrics that read the same model output of an image (vanishing and confusion) compute it once."""
        if key not in self._memo:
            if len(self._memo) >= MEMO_SIZE:
                self._memo.pop(next(iter(self._memo)))
            self._memo[key] = compute()
        return self._memo[key]

    def concept(self, concept_id: str) -> Concept:
        """The spec's concept by id."""
        return self.spec.concepts[concept_id]

    def sorted_references(self, concept_id: str) -> list[tuple[Path, Path | None]]:
        """(reference, mask or None) pairs sorted by file name: the order ``first_ref`` relies on."""
        refs = sorted(self.references.reference_images(concept_id), key=lambda p: p.name)
        if not refs:
            raise FileNotFoundError(
                f"{self.spec.path}: concepts[{concept_id}].references: expected at least one reference image"
            )
        masks = {p.stem: p for p in self.references.mask_images(concept_id)}
        return [(ref, masks.get(ref.stem)) for ref in refs]

    def reference_embeddings(self, embedder: Embedder, concept_id: str, crop_mode: str) -> torch.Tensor:
        """``[R, D]`` embeddings of a concept's references in sorted file-name order, cached by file hash."""
        key = (embedder.fingerprint, concept_id, crop_mode)
        if key not in self._refs:
            rows = [
                self._reference_row(embedder, ref, mask, crop_mode) for ref, mask in self.sorted_references(concept_id)
            ]
            self._refs[key] = torch.stack(rows)
        return self._refs[key]

    def _reference_row(self, embedder: Embedder, ref: Path, mask: Path | None, crop_mode: str) -> torch.Tensor:
        content = file_hash(ref) + (f"+{file_hash(mask)}" if mask is not None and crop_mode == "mask_grey" else "")
        space = hashlib.sha256(f"{embedder.fingerprint}|{crop_mode}".encode()).hexdigest()[:16]
        path = self.cache_dir / space / f"{content}.safetensors" if self.cache_dir is not None else None
        if path is not None and path.is_file():
            return load_file(str(path))["embedding"]
        with Image.open(ref) as image:
            mask_image = Image.open(mask) if mask is not None else None
            view = reference_view(image, mask_image, crop_mode)
        embedding = embedder.embed_images([view])[0].contiguous()
        self.reference_embeds += 1
        if path is not None:
            atomic_write_bytes(path, save_bytes({"embedding": embedding}))
        return embedding
