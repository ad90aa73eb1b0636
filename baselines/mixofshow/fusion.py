"""Mix-of-Show gradient fusion (research branch): one fused model from several ED-LoRAs.

Every fused linear layer is fitted independently: starting from its base weight ``W0``, L-BFGS
minimises ``sum_i mean ||W X_i - (W0 + alpha_i dW_i) X_i||^2`` over concepts ``i``, where ``X_i`` are
that layer's input activations recorded while concept ``i``'s own merged model runs on concept
``i``'s prompts. Stages run in upstream's order:

1. token embeddings: the union of every concept's layer-wise embeddings (nothing optimised);
2. text encoder (``q/k/v/out_proj``), activations of ``"photo of a <c1> <c2>"`` and ``"<c1> <c2>"``
   (16 layer-bound copies each, unpadded rows) through the text encoder with concept ``i``'s LoRA merged
   at ``text_alpha``, the alpha of its targets (upstream's ``gradient_fusion`` merges each concept at its
   ``text_encoder_alpha`` before recording);
3. cross-attention ``to_k``/``to_v``: inputs are the *fused* text encoder's outputs at the concept
   tokens and the EOS token (3 rows per prompt), one layer-wise copy per cross-attention layer;
4. spatial layers (every other UNet delta: ``attn1.*``, ``attn2.to_q``, ``attn2.to_out.0``): inputs
   recorded at every DDIM step of a conditional-only sample of ``"photo of a <c1> <c2>"`` with the
   fused K/V and concept ``i``'s spatial LoRAs merged.

Memory: the objective is quadratic in ``W``, so ``||(W - T) X||^2 = tr((W - T) X^T X (W - T)^T)``.
Activations are therefore streamed into one Gram matrix ``X^T X`` (``[in, in]``, float64, on the
model's device) per layer while they are produced and never stored. After each concept its Gram
matrices are folded into the layer's objective (``A = sum G_i / c_i``, ``B = sum T_i G_i / c_i``) and
dropped, so memory does not grow with the number of concepts or sampling steps: for SD1.5 about
0.3 GB of Gram matrices plus the same again for the objectives (``A``) and the ``[out, in]`` ``B``
terms, instead of upstream's tens of GB of stored activations per concept. This is exact (no
subsampling) and makes each L-BFGS evaluation independent of the row count.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
from diffusers import DDIMScheduler, StableDiffusionPipeline
from torch import nn
from tqdm import tqdm

from bench.layers import cross_attention_layers
from bench.lora.apply import lora_merged
from bench.lora.canonical import ConceptLora, LoraDelta
from bench.prompts import LayerwiseState, LayerwiseTextEncoder, install_layerwise
from bench.seeds import initial_noise

FUSION_VERSION = 1


@dataclass(frozen=True)
class FusionConfig:
    """Fusion settings; defaults are the research branch's (``Gradient_Fusion_EDLoRA.py``)."""

    text_iters: int = 500  # --optimize_textenc_iters: text encoder and cross-attention K/V
    unet_iters: int = 50  # --optimize_unet_iters: spatial layers
    text_alpha: float = 1.0
    unet_alpha: float = 1.0
    history_size: int = 25
    spatial_steps: int = 50  # DDIM steps of the activation-recording sample (all recorded)
    spatial_height: int = 512
    spatial_width: int = 512
    spatial_seed: int = 0  # upstream draws the latent from global RNG; we seed it
    spatial_prompt: str = "photo of a {}"
    text_prompts: tuple[str, ...] = ("photo of a {}", "{}")


@dataclass(frozen=True)
class FusionConcept:
    """One concept to fuse: its canonical LoRA and its tokens in prompt order (``('<a1>', '<a2>')``)."""

    lora: ConceptLora
    tokens: tuple[str, ...]

    @property
    def phrase(self) -> str:
        """The concept's token string, e.g. ``'<a1> <a2>'``."""
        return " ".join(self.tokens)


@dataclass
class LayerFit:
    """Objective of one layer at the base weight and at the returned (best) weight."""

    start: float
    best: float


@dataclass
class FusedModel:
    """Fused full weights of every fused layer plus the union of the concepts' token embeddings."""

    unet: dict[str, torch.Tensor]
    text_encoder: dict[str, torch.Tensor]
    token_embeddings: dict[str, torch.Tensor]
    fits: dict[str, LayerFit] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per stage (not cached)

    def tokens_concept(self) -> ConceptLora:
        """A weight-free ConceptLora carrying every fused token (for layer-wise prompt encoding)."""
        return ConceptLora(token_embeddings=dict(self.token_embeddings), source="fused", format="fused")

    def fit_summary(self) -> dict[str, float]:
        """Sum of the objectives at the base weights and at the fused weights, per stage prefix."""
        summary: dict[str, float] = {}
        for name, fit in self.fits.items():
            stage = name.split(":", 1)[0]
            summary[f"{stage}_start"] = summary.get(f"{stage}_start", 0.0) + fit.start
            summary[f"{stage}_fused"] = summary.get(f"{stage}_fused", 0.0) + fit.best
        return summary


# ----------------------------------------------------------------------------------------------
# The per-layer fit


@dataclass
class _Gram:
    """Streamed ``X^T X`` (float64, on the activations' device) and the number of rows of one layer."""

    matrix: torch.Tensor
    rows: int = 0

    def add(self, x: torch.Tensor) -> None:
        """Add the rows of ``x`` (``[..., in]``)."""
        x = x.reshape(-1, x.shape[-1]).to(torch.float32)
        self.matrix += (x.T @ x).to(self.matrix)
        self.rows += x.shape[0]


class _Quadratic:
    """``sum_i mean((W X_i - T_i X_i)^2)`` (upstream's MSE, summed over concepts) from Gram matrices.

    With ``A = sum_i G_i / c_i``, ``B = sum_i T_i G_i / c_i`` and ``c_i = rows_i * out``, the objective is
    ``tr(W A W^T) - 2 tr(W B^T) + const`` and its gradient ``2 (W A - B)``, in float64. Concepts are
    folded in one at a time, so a concept's Gram matrices can be dropped once it is added.
    """

    def __init__(self, out: int, n: int, device: torch.device):
        self.a = torch.zeros(n, n, dtype=torch.float64, device=device)
        self.b = torch.zeros(out, n, dtype=torch.float64, device=device)
        self.const = 0.0

    def add(self, gram: _Gram, target: torch.Tensor) -> None:
        """Fold in one concept's activations (as a Gram matrix) and its target weight ``T_i``."""
        if gram.rows == 0:
            return
        g = gram.matrix.to(self.a.device) / (gram.rows * target.shape[0])
        t = target.to(device=self.a.device, dtype=torch.float64)
        tg = t @ g
        self.a += g
        self.b += tg
        self.const += float((tg * t).sum())

    def __call__(self, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Objective and gradient at ``weight``."""
        wa = weight @ self.a
        loss = (wa * weight).sum() - 2 * (weight * self.b).sum() + self.const
        return loss, 2 * (wa - self.b)


def fit_layer(w0: torch.Tensor, objective: _Quadratic, iters: int, history_size: int = 25
              ) -> tuple[torch.Tensor, LayerFit]:
    """L-BFGS from ``w0`` (strong Wolfe, one ``step`` of ``iters`` iterations); the best weight seen wins."""
    weight = w0.detach().to(device=objective.a.device, dtype=torch.float64).clone()
    start = float(objective(weight)[0])
    best = {"loss": start, "weight": weight.clone()}
    if iters > 0:
        weight.requires_grad_(True)
        optimizer = torch.optim.LBFGS([weight], lr=1, max_iter=iters, history_size=history_size,
                                      line_search_fn="strong_wolfe", tolerance_grad=1e-16, tolerance_change=1e-16)

        def closure() -> torch.Tensor:
            with torch.no_grad():
                loss, grad = objective(weight)
            weight.grad = grad
            if float(loss) < best["loss"]:
                best["loss"], best["weight"] = float(loss), weight.detach().clone()
            return loss

        optimizer.step(closure)
    return best["weight"].to(device="cpu", dtype=torch.float32), LayerFit(start, best["loss"])


# ----------------------------------------------------------------------------------------------
# Recording activations


def _matrix_of(module: nn.Module) -> torch.Tensor:
    """A linear or 1x1-conv weight as ``[out, in]``."""
    weight = getattr(module, "base_layer", module).weight
    return weight.detach().reshape(weight.shape[0], -1)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """Activations as rows ``[N, in]`` (channels last for 1x1 convs)."""
    return x.movedim(1, -1) if x.ndim == 4 else x


@contextmanager
def _recording(model: nn.Module, names: Sequence[str], grams: dict[str, _Gram],
               select: Callable[[torch.Tensor], torch.Tensor] = lambda x: x) -> Iterator[None]:
    """Stream every named module's input into ``grams[name]`` while active.

    Layers fed the same tensor (``to_q/to_k/to_v`` of self-attention) share one ``X^T X`` product.
    """
    last: dict[str, object] = {}

    def hook_for(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
            x = args[0]
            if last.get("input") is not x:
                rows = _rows(select(x.detach()))
                rows = rows.reshape(-1, rows.shape[-1]).to(torch.float32)
                last.update(input=x, gram=rows.T @ rows, rows=rows.shape[0])
            gram = grams[name]
            gram.matrix += last["gram"]  # type: ignore[operator]
            gram.rows += int(last["rows"])  # type: ignore[call-overload]
        return hook

    handles = [model.get_submodule(name).register_forward_pre_hook(hook_for(name)) for name in names]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
        last.clear()


def _new_grams(model: nn.Module, names: Sequence[str]) -> dict[str, _Gram]:
    grams = {}
    for name in names:
        weight = _matrix_of(model.get_submodule(name))
        grams[name] = _Gram(torch.zeros(weight.shape[1], weight.shape[1], dtype=torch.float64, device=weight.device))
    return grams


def _target(w0: torch.Tensor, delta: LoraDelta | None, alpha: float) -> torch.Tensor:
    """``W0 + alpha * dW_i`` (``W0`` where the concept has no delta on the layer)."""
    w0 = w0.to(torch.float32)
    return w0 if delta is None else w0 + alpha * delta.weight(torch.float32).to(w0.device).reshape(w0.shape)


# ----------------------------------------------------------------------------------------------
# Weights in and out


@contextmanager
def weights_applied(unet: nn.Module | None, text_encoder: nn.Module | None,
                    unet_weights: Mapping[str, torch.Tensor], text_weights: Mapping[str, torch.Tensor]
                    ) -> Iterator[None]:
    """Write full layer weights into the models for the body, then restore the exact originals."""
    saved: list[tuple[torch.Tensor, torch.Tensor]] = []
    try:
        with torch.no_grad():
            for model, weights in ((unet, unet_weights), (text_encoder, text_weights)):
                if not weights:
                    continue
                if model is None:
                    raise ValueError("weights_applied: got weights for a model that was not given")
                for name, value in weights.items():
                    param = getattr(model.get_submodule(name), "base_layer", model.get_submodule(name)).weight
                    saved.append((param, param.detach().clone()))
                    param.copy_(value.reshape(param.shape).to(param))
        yield
    finally:
        with torch.no_grad():
            for param, original in reversed(saved):
                param.copy_(original)


def _ordered(model: nn.Module, keys: set[str]) -> list[str]:
    """``keys`` in the model's module order."""
    return [name for name, _ in model.named_modules() if name in keys]


def _only(lora: ConceptLora, keep: Callable[[str], bool]) -> ConceptLora:
    return ConceptLora(unet={k: d for k, d in lora.unet.items() if keep(k)}, source=lora.source, format=lora.format)


def _union_tokens(concepts: Sequence[FusionConcept]) -> dict[str, torch.Tensor]:
    table: dict[str, torch.Tensor] = {}
    for concept in concepts:
        for token, emb in concept.lora.token_embeddings.items():
            if token in table and not torch.equal(table[token], emb):
                raise ValueError(f"{concept.lora.source}: token '{token}' is also defined by another concept; "
                                 "expected distinct token names per fused concept")
            table[token] = emb.detach().clone()
    return table


# ----------------------------------------------------------------------------------------------
# The stages


class _Fuser:
    """Runs the stages on a pipeline whose weights are restored afterwards."""

    def __init__(self, pipe: StableDiffusionPipeline, concepts: Sequence[FusionConcept], config: FusionConfig,
                 progress: bool):
        self.pipe, self.concepts, self.config, self.progress = pipe, list(concepts), config, progress
        self.encoder = LayerwiseTextEncoder.from_pipeline(pipe)
        self.cross = cross_attention_layers(pipe.unet)
        self.fits: dict[str, LayerFit] = {}

    def _fold(self, quads: dict[str, _Quadratic], model: nn.Module, grams: dict[str, _Gram], concept: FusionConcept,
              deltas: Mapping[str, LoraDelta], alpha: float) -> None:
        """Add one concept's recorded Gram matrices and targets to every layer's objective."""
        for name, gram in grams.items():
            w0 = _matrix_of(model.get_submodule(name))
            if name not in quads:
                quads[name] = _Quadratic(w0.shape[0], w0.shape[1], w0.device)
            quads[name].add(gram, _target(w0, deltas.get(name), alpha))

    def _fit_all(self, stage: str, model: nn.Module, quads: Mapping[str, _Quadratic], iters: int
                 ) -> dict[str, torch.Tensor]:
        fused = {}
        bar = tqdm(list(quads), desc=f"fusion {stage}", unit="layer", disable=not self.progress, dynamic_ncols=True)
        for name in bar:
            weight, fit = fit_layer(_matrix_of(model.get_submodule(name)), quads[name], iters,
                                    self.config.history_size)
            fused[name] = weight
            self.fits[f"{stage}:{name}"] = fit
        return fused

    def text_encoder(self) -> dict[str, torch.Tensor]:
        te = self.pipe.text_encoder
        names = _ordered(te, {k for c in self.concepts for k in c.lora.text_encoder})
        layers = len(self.cross)
        quads: dict[str, _Quadratic] = {}
        for concept in self.concepts:
            concept_grams = _new_grams(te, names)
            tokenizer = self.encoder.tokenizer_for(list(concept.lora.token_embeddings))
            # Activations of the concept's own model at text_alpha: the targets use the same alpha.
            with lora_merged(None, te, [_text_only(concept.lora)], [self.config.text_alpha]):
                for template in self.config.text_prompts:
                    prompt = template.format(concept.phrase)
                    n = len(tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids)
                    with _recording(te, names, concept_grams, select=lambda x, n=n: x[:, :n]):
                        self.encoder.encode(prompt, concepts=[concept.lora], num_layers=layers)
            self._fold(quads, te, concept_grams, concept, concept.lora.text_encoder, self.config.text_alpha)
        return self._fit_all("text_encoder", te, quads, self.config.text_iters)

    def cross_kv(self, tokens: ConceptLora) -> dict[str, torch.Tensor]:
        unet = self.pipe.unet
        names = [f"{layer}.{proj}" for layer in self.cross for proj in ("to_k", "to_v")]
        names = [n for n in names if any(n in c.lora.unet for c in self.concepts)]
        quads: dict[str, _Quadratic] = {}
        for concept in self.concepts:
            concept_grams = _new_grams(unet, names)
            tokenizer = self.encoder.tokenizer_for(list(concept.lora.token_embeddings))
            for template in self.config.text_prompts:
                prompt = template.format(concept.phrase)
                hidden = self.encoder.encode(prompt, concepts=[tokens], num_layers=len(self.cross))
                ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
                keep = [i for i, t in enumerate(ids) if t >= tokenizer.eos_token_id]  # concept tokens + EOS
                for index, layer in enumerate(self.cross):
                    for proj in ("to_k", "to_v"):
                        if f"{layer}.{proj}" in concept_grams:
                            concept_grams[f"{layer}.{proj}"].add(hidden[index, keep])
            self._fold(quads, unet, concept_grams, concept, concept.lora.unet, self.config.unet_alpha)
        return self._fit_all("cross_kv", unet, quads, self.config.text_iters)

    def spatial(self, tokens: ConceptLora) -> dict[str, torch.Tensor]:
        unet = self.pipe.unet
        kv = {f"{layer}.{proj}" for layer in self.cross for proj in ("to_k", "to_v")}
        names = _ordered(unet, {k for c in self.concepts for k in c.lora.unet if k not in kv})
        quads: dict[str, _Quadratic] = {}
        bar = tqdm(self.concepts, desc="fusion spatial activations", unit="concept", disable=not self.progress,
                   dynamic_ncols=True)
        for concept in bar:
            concept_grams = _new_grams(unet, names)
            spatial_lora = _only(concept.lora, lambda k: k not in kv)
            with lora_merged(unet, None, [spatial_lora], [self.config.unet_alpha]):
                embeds = self.encoder.encode(self.config.spatial_prompt.format(concept.phrase), concepts=[tokens],
                                             num_layers=len(self.cross))
                with _recording(unet, names, concept_grams):
                    self._sample(embeds[None])
            self._fold(quads, unet, concept_grams, concept, concept.lora.unet, self.config.unet_alpha)
            del concept_grams
        return self._fit_all("spatial", unet, quads, self.config.unet_iters)

    @torch.no_grad()
    def _sample(self, embeds: torch.Tensor) -> None:
        """Conditional-only DDIM sample (no CFG) with layer-wise embeddings; every step is recorded."""
        cfg, unet = self.config, self.pipe.unet
        scheduler = DDIMScheduler.from_config(self.pipe.scheduler.config)
        scheduler.set_timesteps(cfg.spatial_steps, device=unet.device)
        factor = self.pipe.vae_scale_factor
        shape = (1, unet.config.in_channels, cfg.spatial_height // factor, cfg.spatial_width // factor)
        latents = initial_noise(cfg.spatial_seed, shape).to(unet.device, unet.dtype) * scheduler.init_noise_sigma
        embeds = embeds.to(unet.device, unet.dtype)
        with install_layerwise(unet, LayerwiseState(embeds)):
            for t in scheduler.timesteps:
                noise = unet(scheduler.scale_model_input(latents, t), t, encoder_hidden_states=embeds[:, 0],
                             return_dict=False)[0]
                latents = scheduler.step(noise, t, latents, return_dict=False)[0]


def _text_only(lora: ConceptLora) -> ConceptLora:
    return ConceptLora(text_encoder=dict(lora.text_encoder), source=lora.source, format=lora.format)


def gradient_fusion(pipe: StableDiffusionPipeline, concepts: Sequence[FusionConcept],
                    config: FusionConfig = FusionConfig(), progress: bool = True) -> FusedModel:
    """Fuse the concepts' ED-LoRAs into one model; ``pipe`` holds base weights and is left unchanged."""
    if not concepts:
        raise ValueError("gradient_fusion: expected at least one concept")
    fuser = _Fuser(pipe, concepts, config, progress)
    tokens = ConceptLora(token_embeddings=_union_tokens(concepts), source="fused", format="fused")
    clock = [time.perf_counter()]
    seconds: dict[str, float] = {}

    def lap(stage: str) -> None:
        now = time.perf_counter()
        seconds[stage] = now - clock[0]
        clock[0] = now

    with torch.no_grad():
        text = fuser.text_encoder()
    lap("text_encoder")
    with weights_applied(None, pipe.text_encoder, {}, text):
        kv = fuser.cross_kv(tokens)
        lap("cross_kv")
        with weights_applied(pipe.unet, None, kv, {}):
            spatial = fuser.spatial(tokens)
        lap("spatial")
    return FusedModel(unet={**kv, **spatial}, text_encoder=text, token_embeddings=dict(tokens.token_embeddings),
                      fits=fuser.fits, seconds=seconds)


# ----------------------------------------------------------------------------------------------
# Identity of a fusion (for the cache)


def _tensor_digest(h: hashlib._Hash, name: str, tensor: torch.Tensor) -> None:
    t = tensor.detach().to("cpu", torch.float32).contiguous()
    h.update(f"{name}:{list(t.shape)}".encode())
    h.update(t.numpy().tobytes())


def lora_digest(lora: ConceptLora) -> str:
    """SHA-256 of a LoRA's canonical contents (deltas, scales, token embeddings), independent of file format."""
    h = hashlib.sha256()
    for part, deltas in (("unet", lora.unet), ("text_encoder", lora.text_encoder)):
        for key in sorted(deltas):
            d = deltas[key]
            _tensor_digest(h, f"{part}.{key}.down", d.down)
            _tensor_digest(h, f"{part}.{key}.up", d.up)
            h.update(repr(float(d.scale)).encode())
    for token in sorted(lora.token_embeddings):
        _tensor_digest(h, f"token.{token}", lora.token_embeddings[token])
    return h.hexdigest()


def model_fingerprint(pipe: StableDiffusionPipeline, samples: int = 64) -> str:
    """A cheap SHA-256 of the UNet and text encoder: every tensor's name, shape and ``samples`` strided values."""
    h = hashlib.sha256()
    for part, model in (("unet", pipe.unet), ("text_encoder", pipe.text_encoder)):
        for name, tensor in model.state_dict().items():
            flat = tensor.detach().reshape(-1)
            step = max(1, flat.numel() // samples)
            _tensor_digest(h, f"{part}.{name}:{list(tensor.shape)}", flat[::step][:samples])
    return h.hexdigest()


def fusion_key(pipe: StableDiffusionPipeline, concepts: Sequence[FusionConcept], config: FusionConfig) -> str:
    """The cache key: hash of base model, every concept's LoRA contents and tokens, and the settings."""
    payload = {
        "version": FUSION_VERSION,
        "base": model_fingerprint(pipe),
        "concepts": [{"lora": lora_digest(c.lora), "tokens": list(c.tokens)} for c in concepts],
        "config": asdict(config),
    }
    if config.text_alpha != 1.0:  # fusions before text activations were recorded at text_alpha (not 1) differ
        payload["text_activations_at_alpha"] = True
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:20]
