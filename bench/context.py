"""What a method gets besides the scene and seed: the dataset, its assets and shared, cached models."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from diffusers import StableDiffusionPipeline

from bench.assets import AssetResolver
from bench.lora.canonical import ConceptLora
from bench.lora.formats import check_lora_fits, load_lora
from bench.models import create, random_weights
from bench.pipelines import load_base_model
from bench.spec import Concept, DatasetSpec


class RunContext:
    """Shared resources of one run. Models and LoRAs are loaded once and cached.

    The base pipelines are shared between methods: a method must leave them as it found them
    (merge LoRAs with ``bench.lora.apply.lora_merged``, restore attention processors).
    """

    def __init__(
        self,
        spec: DatasetSpec,
        assets: AssetResolver,
        device: str | torch.device = "cpu",
        dtype: torch.dtype = torch.float32,
    ):
        self.spec = spec
        self.assets = assets
        self.device = torch.device(device)
        self.dtype = dtype
        self._pipelines: dict[str, StableDiffusionPipeline] = {}
        self._loras: dict[str, ConceptLora] = {}
        self._models: dict[tuple[str, str], Any] = {}
        self.used: dict[tuple[str, str], bool] = {}  # (kind, ref) -> random weights, since begin_item()

    def begin_item(self) -> None:
        """Forget which models the previous item used (the runner calls it before each item)."""
        self.used = {}

    def models_used(self) -> list[dict[str, Any]]:
        """The models the current item used: kind, reference, and whether their weights are random."""
        return [{"kind": kind, "ref": ref, "random_weights": random} for (kind, ref), random in self.used.items()]

    def _note(self, ref: str, kind: str) -> None:
        self.used[(kind, ref)] = random_weights(ref, kind)

    def model(self, ref: str, kind: str, where: str = "", **options: Any) -> Any:
        """A model from the front door (:func:`bench.models.create`), made once per run and noted as used."""
        key = (kind, ref)
        if key not in self._models:
            self._models[key] = create(ref, kind, where=where, dtype=self.dtype, **options)
        self._note(ref, kind)
        return self._models[key]

    def concept(self, concept_id: str) -> Concept:
        """The spec's concept by id."""
        return self.spec.concepts[concept_id]

    def base_pipeline(self, style: str) -> StableDiffusionPipeline:
        """The base model of a style ('real' or 'anime'), loaded once, on the run's device."""
        ref = self.assets.base_model_ref(style)
        if ref not in self._pipelines:
            pipe = load_base_model(ref, where=f"{self.spec.path}: base_models.{style}", dtype=self.dtype)
            self._pipelines[ref] = pipe.to(self.device)
        self._note(ref, "pipeline")
        return self._pipelines[ref]

    def concept_lora(self, concept_id: str) -> ConceptLora:
        """A concept's LoRA in canonical form, checked against its style's base model, loaded once."""
        if concept_id not in self._loras:
            concept = self.concept(concept_id)
            path = self.assets.lora_path(concept_id)
            lora = load_lora(path, where=f"{self.spec.path}: concepts[{concept_id}].lora")
            pipe = self.base_pipeline(concept.style)
            check_lora_fits(lora, pipe.unet, pipe.text_encoder, where=f"concepts[{concept_id}].lora")
            self._loras[concept_id] = lora
        return self._loras[concept_id]

    def reference_images(self, concept_id: str) -> list[Path]:
        """The concept's reference images, sorted by file name."""
        return self.assets.reference_images(concept_id)
