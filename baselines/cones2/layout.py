"""From a scene to Cones2's inputs: a class-word prompt, each subject's token positions, and weight maps.

Upstream matches a layout colour to every occurrence of the subject's class word in the prompt, so
two subjects of the same class ("dog" and "dog") both receive both maps. ``token_matching='position'``
(the default here, a labelled deviation) gives each subject's map only to its own token positions;
``'class_word'`` reproduces upstream.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import torch

from bench.boxes import box_mask
from bench.layers import grid_at_level
from bench.spec import DatasetSpec, Scene

TOKEN_MATCHING = ("position", "class_word")


@dataclass(frozen=True)
class Subject:
    """One region's subject in the Cones2 prompt: its class word and token span ``[start, start+length)``."""

    concept: str
    class_word: str
    start: int
    length: int
    box: tuple[float, float, float, float]

    @property
    def positions(self) -> range:
        """The token positions of the subject's class word (BOS = 0)."""
        return range(self.start, self.start + self.length)


def _ids(tokenizer: object, text: str) -> list[int]:
    return list(tokenizer(text, truncation=False).input_ids)  # type: ignore[operator]


def build_prompt(scene: Scene, spec: DatasetSpec, tokenizer: object) -> tuple[str, list[Subject], list[str]]:
    """The scene's prompt with concept tokens replaced by class words, and each region's subject span.

    A region whose concept tokens are missing from the global prompt takes the first unclaimed
    occurrence of its class word; failing that, ", a <class word>" is appended (listed in the third
    return value).
    """
    text = scene.prompt
    appended = []
    for region in scene.regions:
        concept = spec.concepts[region.concept]
        if concept.tokens in text:
            continue
        # a prompt written with class words ("a cat and a dog"): claim the first free occurrence
        match = re.search(rf"\b{re.escape(concept.class_name)}\b", text)
        if match:
            text = text[: match.start()] + concept.tokens + text[match.end() :]
        else:
            text = f"{text}, a {concept.tokens}"
            appended.append(region.concept)
    # walk the prompt left to right, replacing token strings and tracking each region's class-word span
    spans: dict[str, tuple[int, int]] = {}
    out = ""
    rest = text
    region_concepts = [r.concept for r in scene.regions]
    while True:
        hits = [(rest.find(c.tokens), c) for c in spec.concepts.values() if c.tokens in rest]
        if not hits:
            out += rest
            break
        pos, concept = min(hits, key=lambda h: (h[0], -len(h[1].tokens)))
        out += rest[:pos]
        start = len(out)
        out += concept.class_name
        if concept.id in region_concepts and concept.id not in spans:
            spans[concept.id] = (start, len(out))
        rest = rest[pos + len(concept.tokens) :]
    subjects = []
    full_ids = _ids(tokenizer, out)
    for region in scene.regions:
        concept = spec.concepts[region.concept]
        char_start, _ = spans[region.concept]
        start = len(_ids(tokenizer, out[:char_start])) - 1  # BOS counted, EOS not
        word_ids = _ids(tokenizer, concept.class_name)[1:-1]
        if full_ids[start : start + len(word_ids)] != word_ids:
            raise ValueError(
                f"scene '{scene.id}': class word '{concept.class_name}' of concept '{concept.id}' "
                f"does not tokenize on its own inside the prompt {out!r}"
            )
        if start + len(word_ids) >= tokenizer.model_max_length:  # type: ignore[attr-defined]
            raise ValueError(
                f"scene '{scene.id}': the class word of '{concept.id}' falls beyond the "
                f"{tokenizer.model_max_length}-token limit in {out!r}"
            )  # type: ignore[attr-defined]
        subjects.append(Subject(concept.id, concept.class_name, start, len(word_ids), tuple(region.box)))
    return out, subjects, appended


def attention_grids(latent_h: int, latent_w: int, levels: int) -> list[tuple[int, int]]:
    """The (h, w) of each UNet resolution: the latent halved with ceil ``levels - 1`` times."""
    return [grid_at_level((latent_h, latent_w), 2**k) for k in range(levels)]


def subject_map(
    subjects: list[Subject], index: int, grid_h: int, grid_w: int, active: float, negative: float
) -> torch.Tensor:
    """Subject ``index``'s weight map: ``active`` on its box, ``negative`` everywhere else (background included).

    Upstream ``layout_guidance.py`` L215 (``_image_context_seperator``): ``torch.where(in_colour,
    weight_active, neg)``; the ``torch.where`` after it puts ``neg`` on every coloured pixel whose value
    is still 0 (which only matters when ``active == 0``: the subject then gets ``neg`` on its own box
    too). Boxes are painted
    in region order, so a later box owns the cells where boxes overlap (like colours painted into
    upstream's layout image).
    """
    label = torch.full((grid_h, grid_w), -1, dtype=torch.long)
    for i, subject in enumerate(subjects):
        label[box_mask(subject.box, grid_h, grid_w).bool()] = i
    out = torch.where(label == index, torch.tensor(float(active)), torch.tensor(float(negative)))
    return torch.where((label >= 0) & (out == 0.0), torch.tensor(float(negative)), out)


def layout_weights(
    subjects: list[Subject],
    token_ids: list[int],
    tokenizer: object,
    grids: list[tuple[int, int]],
    active: float = 2.5,
    negative: float = -1e8,
    matching: str = "position",
) -> dict[int, torch.Tensor]:
    """Weight maps ``[h*w, T]`` for each grid, keyed by ``h*w`` (the processors' sequence length)."""
    if matching not in TOKEN_MATCHING:
        raise ValueError(f"Cones2 parameter 'token_matching': expected one of {list(TOKEN_MATCHING)}, got {matching!r}")
    out = {}
    for grid_h, grid_w in grids:
        weight = torch.zeros(grid_h * grid_w, len(token_ids))
        for i, subject in enumerate(subjects):
            column = subject_map(subjects, i, grid_h, grid_w, active, negative).reshape(-1, 1)
            if matching == "position":
                spans = [subject.start]
            else:
                word = _ids(tokenizer, subject.class_word)[1:-1]
                spans = [p for p in range(len(token_ids)) if token_ids[p : p + len(word)] == word]
            for start in spans:
                weight[:, start : start + subject.length] += column
        out[grid_h * grid_w] = weight
    return out
