"""Out-of-process methods: a fake command that follows the protocol, and one that breaks it."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest

from bench.store import RunStore
from lcbench.cli import main

FAKE = textwrap.dedent(
    """
    import json, sys
    from PIL import Image
    req = json.load(open(sys.argv[1]))
    assert req["protocol"] == "lcbench-external/1"
    scene = req["scene"]
    for cid, c in req["concepts"].items():
        assert c["references"], cid
    img = Image.new("RGB", (scene["width"], scene["height"]), (10, 20, 30))
    img.save(req["output_image"])
    json.dump({"boxes": [r["box"] for r in scene["regions"]], "seed": req["seed"]}, open(req["output_record"], "w"))
    """
)


@pytest.fixture
def external_config(tmp_path, monkeypatch):
    script = tmp_path / "fake_method.py"
    script.write_text(FAKE)
    broken = tmp_path / "broken.py"
    broken.write_text("import sys; sys.exit(0)\n")
    config = tmp_path / "external.yaml"
    config.write_text(json.dumps({"methods": [
        {"name": "ext-fake", "command": [sys.executable, str(script)], "description": "fake"},
        {"name": "ext-broken", "command": [sys.executable, str(broken)]},
    ]}))
    monkeypatch.setenv("LCBENCH_EXTERNAL_METHODS", str(config))
    return config


def test_external_method_runs_through_the_protocol(tmp_path, external_config):
    out = tmp_path / "run"
    assert main(["--quiet", "run", "--methods", "ext-fake", "--dataset", "random", "--out", str(out)]) == 0
    records = list(RunStore(out).records())
    assert records and all(r.ok for r in records)
    scene_boxes = {r.key.scene: r.data["record"]["external"]["boxes"] for r in records}
    from bench.spec import load_spec

    spec = load_spec(RunStore(out).read_manifest()["dataset"]["path"])
    for scene_id, boxes in scene_boxes.items():
        assert boxes == [list(r.box) for r in spec.scenes[scene_id].regions]


def test_external_method_breaking_the_protocol_is_a_failed_item(tmp_path, external_config):
    out = tmp_path / "run"
    assert main(["--quiet", "run", "--methods", "ext-broken", "--dataset", "random", "--out", str(out)]) == 0
    records = list(RunStore(out).records())
    assert records and not any(r.ok for r in records)
    assert "did not write image.png" in records[0].data["error"]


def test_bad_external_config_names_the_field(tmp_path, monkeypatch, capsys):
    config = tmp_path / "external.yaml"
    config.write_text("methods:\n  - name: x\n    command: not-a-list\n")
    monkeypatch.setenv("LCBENCH_EXTERNAL_METHODS", str(config))
    assert main(["list", "methods"]) == 2
    err = capsys.readouterr().err
    assert str(config) in err and "methods[0].command" in err
