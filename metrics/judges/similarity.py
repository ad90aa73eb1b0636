"""Identity by similarity: the box crop against each scene concept's reference images (DINO or CLIP).

For a box, the similarity to a concept is the mean cosine between the crop's embedding and the
embeddings of the concept's reference images (all pairs, as CLIP-I/DINO average them). The concept with
the highest similarity wins; another concept of the scene counts as the box's identity only when it
beats the box's own concept by more than ``margin``. With ``min_similarity`` set, a box whose best
similarity is below it shows none of the scene's concepts. Each verdict keeps the numbers (own and best
rival similarity, their difference) in the score row.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
from PIL import Image

from bench.models import ModelError
from metrics.box_judge import BoxQuery, BoxVerdict, ConceptCard
from metrics.crops import crop_box, reference_view

IDENTITY_CROPS = ("center_crop", "pad_square")


class ImageEmbedder(Protocol):
    """What the judge needs of an embedder (``metrics.models.ClipEmbedder`` / ``DinoEmbedder``)."""

    name: str
    weights: str
    preprocess_desc: str

    def embed_images(self, images: Sequence[Image.Image]) -> torch.Tensor:
        """L2-normalised embeddings ``[N, D]``."""
        ...


class SimilarityJudge:
    """A box judge that names the scene concept whose references the box crop resembles most.

    As a judge on its own: ``present`` = the box's own concept is the identity (so a box whose best
    similarity is below ``min_similarity`` has vanished). Combined with a detector
    (:class:`metrics.judges.combined.CombinedJudge`) only its ``identity`` is used.
    """

    def __init__(self, embedder: ImageEmbedder, backbone: str, *, crop_mode: str = "center_crop",
                 margin: float = 0.0, min_similarity: float | None = None):
        if crop_mode not in IDENTITY_CROPS:
            raise ValueError(f"identity judge: crop_mode: expected one of {list(IDENTITY_CROPS)} (got {crop_mode!r})")
        if margin < 0:
            raise ValueError(f"identity judge: margin: expected a number >= 0 (got {margin})")
        self.embedder, self.backbone = embedder, backbone
        self.crop_mode, self.margin, self.min_similarity = crop_mode, float(margin), min_similarity
        self.ref = f"{backbone}-similarity:{embedder.name}"
        self.weights = embedder.weights
        self.preprocess = embedder.preprocess_desc
        self.crop = f"{crop_mode} of the box; references {crop_mode}, whole image"
        self._refs: dict[Path, torch.Tensor] = {}

    @property
    def identity_rule(self) -> str:
        """How the identity is picked, in words."""
        floor = (f"; none of them when the best similarity is below {self.min_similarity}"
                 if self.min_similarity is not None else "")
        return (f"the scene concept whose reference images are most similar to the box crop ({self.backbone} "
                f"cosine, mean over the concept's references); another concept wins only by more than margin "
                f"{self.margin}{floor}")

    @property
    def presence_rule(self) -> str:
        """When the judge alone calls the concept present, in words."""
        return "the box's own concept is the identity (" + self.identity_rule + ")"

    def reference_embeddings(self, concept: ConceptCard) -> torch.Tensor:
        """``[R, D]`` embeddings of a concept's reference images (each file embedded once)."""
        files = concept.references()
        missing = [f for f in files if f not in self._refs]
        if missing:
            views = []
            for path in missing:
                with Image.open(path) as image:
                    views.append(reference_view(image, None, self.crop_mode))
            for path, row in zip(missing, self.embedder.embed_images(views), strict=True):
                self._refs[path] = row
        return torch.stack([self._refs[f] for f in files])

    def similarities(self, crops: torch.Tensor, queries: Sequence[BoxQuery]) -> list[dict[str, float]]:
        """Per query: concept id -> mean cosine of its crop to that concept's references."""
        out = []
        for row, query in zip(crops, queries, strict=True):
            out.append({c.id: float((self.reference_embeddings(c) @ row).mean()) for c in query.scene})
        return out

    def judge(self, image: Image.Image, queries: Sequence[BoxQuery]) -> list[BoxVerdict]:
        """One verdict per query."""
        if not queries:
            return []
        crops = self.embedder.embed_images([crop_box(image, q.box, self.crop_mode) for q in queries])
        return [self.decide(q, sims) for q, sims in zip(queries, self.similarities(crops, queries), strict=True)]

    def decide(self, query: BoxQuery, sims: dict[str, float]) -> BoxVerdict:
        """The verdict from one box's similarities (see the module docstring)."""
        own = query.concept.id
        rivals = {cid: v for cid, v in sims.items() if cid != own}
        rival = max(rivals, key=lambda cid: rivals[cid]) if rivals else None
        details: dict[str, Any] = {"similarity": round(sims[own], 6)}
        if rival is not None:
            details.update(rival=rival, rival_similarity=round(rivals[rival], 6),
                           margin=round(sims[own] - rivals[rival], 6))
        best = max(sims.values())
        if self.min_similarity is not None and best < self.min_similarity:
            return BoxVerdict(False, None, f"none of the scene (best {best:.3f})", details)
        identity = rival if rival is not None and rivals[rival] - sims[own] > self.margin else own
        reading = f"{identity} {sims[identity]:.3f}" + (f" ({own} {sims[own]:.3f})" if identity != own else "")
        return BoxVerdict(identity == own, identity, reading, details)


def similarity_judge(backbone: str, embedder: ImageEmbedder | None = None, *, origin: str = "",
                     crop_mode: str = "center_crop", margin: float = 0.0, min_similarity: float | None = None,
                     **_: Any) -> SimilarityJudge:
    """The built-in ``builtin:dino-similarity`` / ``builtin:clip-similarity`` judge over ``embedder``."""
    if embedder is None:
        where = f"{origin}: builtin:{backbone}-similarity" if origin else f"builtin:{backbone}-similarity"
        raise ModelError(f"{where}: expected an embedder: use `bench score RUN --judge identity={backbone}"
                         f"{':DIR' if backbone == 'dino' else ''}`, which passes the run's {backbone.upper()}")
    return SimilarityJudge(embedder, backbone, crop_mode=crop_mode, margin=margin, min_similarity=min_similarity)
