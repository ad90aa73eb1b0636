"""The toy world's generator, grounding loss, ED-LoRA export and classifier geometry (no trained weights needed)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from peft import LoraConfig, inject_adapter_in_model

from bench.lora.apply import lora_merged
from bench.lora.formats import load_lora
from bench.tokenizer import build_clip_tokenizer
from toytrain.base import box_masks, grounding_loss, grounding_targets, word_token_positions
from toytrain.lora import TEXT_TARGETS, UNET_TARGETS, write_edlora
from toyworld.classifier import square_box
from toyworld.concepts import CONCEPTS
from toyworld.models import build_text_encoder, build_unet
from toyworld.world import COLOURS, PLAIN_BACKGROUNDS, ToyObject, render, sample_image


def test_generation_is_deterministic_per_seed():
    a = [sample_image(np.random.default_rng(3)) for _ in range(2)]
    b = [sample_image(np.random.default_rng(3)) for _ in range(2)]
    assert a[0].caption == b[0].caption
    assert np.array_equal(np.asarray(a[0].image), np.asarray(b[0].image))
    assert a[1].caption == b[1].caption


def test_object_pixels_lie_in_its_box_and_have_its_colour():
    obj = ToyObject("square", "blue", "solid", cx=20, cy=40, radius=10, angle=15)
    pixels = np.asarray(render([obj], "white")).astype(int)
    differs = np.abs(pixels - PLAIN_BACKGROUNDS["white"]).sum(-1) > 60
    ys, xs = np.nonzero(differs)
    x0, y0, x1, y1 = obj.box
    assert xs.min() >= x0 - 1 and xs.max() <= x1 and ys.min() >= y0 - 1 and ys.max() <= y1
    centre = pixels[38:43, 18:23].reshape(-1, 3).mean(0)
    assert np.abs(centre - COLOURS["blue"]).max() < 2


def test_caption_words_point_at_their_objects():
    rng = np.random.default_rng(0)
    for _ in range(50):
        item = sample_image(rng)
        words = item.caption.split(" ")
        for index, obj in enumerate(item.objects):
            named = [words[w].rstrip(",") for w, o in item.word_objects.items() if o == index]
            assert named == obj.words()


def test_word_positions_match_the_tokenized_caption():
    tokenizer = build_clip_tokenizer()
    item = sample_image(np.random.default_rng(5))
    while len(item.objects) < 3:
        item = sample_image(np.random.default_rng(len(item.caption)))
    words = item.caption.split(" ")
    ids = tokenizer(item.caption).input_ids
    for word, positions in zip(words, word_token_positions(tokenizer, words), strict=True):
        assert ids[positions[0] : positions[-1] + 1] == tokenizer(word, add_special_tokens=False).input_ids
    positions, boxes = grounding_targets(tokenizer, [item])
    first_word = min(item.word_objects)
    assert int(positions[0, 0]) == word_token_positions(tokenizer, words)[first_word][0]
    assert tuple(boxes[0, 0].tolist()) == pytest.approx(item.objects[item.word_objects[first_word]].box)


def test_box_masks_cover_the_cells_a_box_overlaps():
    mask = box_masks(torch.tensor([[8.0, 0.0, 24.0, 9.0]]), resolution=8).view(8, 8)
    expected = torch.zeros(8, 8)
    expected[0:2, 1:3] = 1  # cells are 8 px: x 8..24 -> columns 1, 2; y 0..9 -> rows 0, 1
    assert torch.equal(mask, expected)


def test_grounding_loss_matches_a_hand_computation():
    class Recorded:
        probs = torch.zeros(1, 4, 77)

    recorded = Recorded()
    recorded.probs[0, :, 5] = torch.tensor([0.6, 0.2, 0.1, 0.1])  # token 5's map over a 2x2 grid
    positions = torch.tensor([[5, -1]])
    boxes = torch.tensor([[0.0, 0.0, 32.0, 32.0], [0.0, 0.0, 0.0, 0.0]])[None]  # top-left cell of 64 px
    loss = grounding_loss({2: recorded}, positions, boxes, keep=torch.tensor([True]))
    assert float(loss) == pytest.approx((1 - 0.6) ** 2)
    dropped = grounding_loss({2: recorded}, positions, boxes, keep=torch.tensor([False]))
    assert float(dropped) == 0.0


def test_edlora_export_matches_peft(tmp_path):
    torch.manual_seed(0)
    unet, text_encoder = build_unet().eval(), build_text_encoder().eval()
    base_unet, base_text = build_unet().eval(), build_text_encoder().eval()
    base_unet.load_state_dict(unet.state_dict())
    base_text.load_state_dict(text_encoder.state_dict())
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=UNET_TARGETS), unet)
    inject_adapter_in_model(LoraConfig(r=4, lora_alpha=4, target_modules=TEXT_TARGETS), text_encoder)
    with torch.no_grad():
        for name, p in [*unet.named_parameters(), *text_encoder.named_parameters()]:
            if "lora_B" in name:
                p.normal_(0, 0.2)
    concept = CONCEPTS["ruby"]
    tokens = {t: torch.randn(7, 64) for t in concept.tokens}
    path = tmp_path / "ruby.safetensors"
    write_edlora(path, tokens, text_encoder, unet)
    lora = load_lora(path)
    assert lora.format == "edlora" and set(lora.token_embeddings) == set(concept.tokens)
    ids = build_clip_tokenizer()(["a red circle"], padding="max_length", max_length=77, return_tensors="pt").input_ids
    latents, hidden = torch.randn(1, 4, 16, 16), torch.randn(1, 77, 64)
    with torch.no_grad():
        expected_text = text_encoder(ids)[0]
        expected_noise = unet(latents, 10, encoder_hidden_states=hidden).sample
        with lora_merged(base_unet, base_text, [lora], [1.0]):
            got_text = base_text(ids)[0]
            got_noise = base_unet(latents, 10, encoder_hidden_states=hidden).sample
        plain_noise = base_unet(latents, 10, encoder_hidden_states=hidden).sample
    torch.testing.assert_close(got_text, expected_text, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_noise, expected_noise, atol=1e-4, rtol=1e-4)
    assert (plain_noise - expected_noise).abs().max() > 1e-3  # the LoRA really changes the output


def test_square_box_is_centred_and_kept_inside_the_image():
    assert square_box((10, 20, 30, 30), 64, 64) == (10, 15, 30, 35)
    assert square_box((50, 50, 70, 64), 64, 64) == (44, 44, 64, 64)
    assert square_box((0, 0, 100, 20), 64, 64) == (0, 0, 64, 64)
