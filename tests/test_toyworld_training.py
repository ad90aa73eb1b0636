"""Every training stage of the toy world runs end to end (at a tiny scale) and writes loadable weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from bench.lora.formats import check_lora_fits, load_lora
from toyworld.classifier import load_classifier
from toyworld.concepts import CONCEPTS
from toyworld.models import MissingWeights, load_toy_pipeline


def _train(stage: str, out, *extra: str) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    subprocess.run([sys.executable, "-m", "toytrain", stage, "--out", str(out), "--scale", "0.002",
                    "--threads", "1", *extra], check=True, env=env, capture_output=True, timeout=300)


@pytest.mark.slow
def test_all_stages_train_and_load(tmp_path):
    with pytest.raises(MissingWeights, match="python -m toytrain base"):
        load_toy_pipeline(tmp_path)
    for stage in ("vae", "base", "classifier", "clip"):
        _train(stage, tmp_path)
    _train("lora", tmp_path, "--concepts", "ruby")
    pipe = load_toy_pipeline(tmp_path)
    assert pipe.vae_scale_factor == 4 and pipe.unet.config.sample_size == 16
    lora = load_lora(tmp_path / "loras" / "ruby.safetensors")
    check_lora_fits(lora, pipe.unet, pipe.text_encoder)
    assert set(lora.token_embeddings) == set(CONCEPTS["ruby"].tokens)
    assert load_classifier(tmp_path) is not None
    assert (tmp_path / "clip.safetensors").is_file()
    stages = {json.loads(line)["stage"] for line in (tmp_path / "training.jsonl").read_text().splitlines()}
    assert {"vae-done", "base-done", "lora-ruby-done", "classifier-done", "clip-done"} <= stages
