"""Annotation: the sidecar schema, the bundled sidecar, the vlm backend with a tiny random model
(plumbing, caching by content hash, failures), and the `annotate` stage end to end on real shards."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from skimage import data as skdata

from realsr_r1.annotate.batch import annotate_samples
from realsr_r1.annotate.captions import clean_text, parse_tags
from realsr_r1.annotate.records import read_records
from realsr_r1.annotate.sidecar import SidecarBackend, SidecarError, load_sidecar
from realsr_r1.annotate.vlm import VlmBackend, VlmError
from realsr_r1.config import Params, ParamsError, VlmParams, parse_params
from realsr_r1.data.images import encode_png, pixel_hash
from realsr_r1.data.shards import ShardSample, read_samples, write_shards
from realsr_r1.data.sources import BUNDLED_PHOTOS
from realsr_r1.degrade.apply import apply_degradation
from realsr_r1.degrade.describe import describe, from_text, to_text
from realsr_r1.degrade.draw import draw_degradation
from stages.common import UsageError

ROOT = Path(__file__).resolve().parents[1]
BUNDLED = ROOT / "realsr_r1" / "assets" / "bundled_annotations.json"
PHOTOS = {"astronaut.png": skdata.astronaut, "chelsea.png": skdata.chelsea, "coffee.png": skdata.coffee}


# -------------------------------------------------------------------------------- fixtures
def _samples(
    per_photo: int = 2, photos: tuple[str, ...] = ("astronaut.png", "chelsea.png"), seed: int = 0
) -> list[dict]:
    """Encoded shard samples built like synthesis does: GT crop, its 1/2 and 1/4, a real degradation."""
    rng = np.random.default_rng(seed)
    params = Params()
    out = []
    for name in photos:
        photo = PHOTOS[name]()
        h, w = photo.shape[:2]
        photo = cv2.resize(photo, (w * 96 // min(h, w), h * 96 // min(h, w)), interpolation=cv2.INTER_AREA)
        gt = np.ascontiguousarray(photo[16:80, 16:80])
        draw = draw_degradation(rng, params.synthesize.degradation, (64, 64), 4)
        for k in range(per_photo):
            lr, stds = apply_degradation(gt, draw)
            items = describe(draw, stds)
            out.append(
                {
                    "__key__": f"{name.split('.')[0]}-{k:03d}",
                    "lr.png": encode_png(lr),
                    "hr.png": encode_png(gt),
                    "hr_2.png": encode_png(cv2.resize(gt, (32, 32), interpolation=cv2.INTER_AREA)),
                    "hr_4.png": encode_png(cv2.resize(gt, (16, 16), interpolation=cv2.INTER_AREA)),
                    "degradation.json": json.dumps(
                        {"draw": draw, "operations": [list(i) for i in items], "text": to_text(items)}
                    ),
                    "meta.json": json.dumps({"source": name}),
                }
            )
    return out


def _decoded(encoded: list[dict], tmp: Path) -> list[ShardSample]:
    write_shards(encoded, tmp, shard_size=100)
    return list(read_samples(tmp))


@pytest.fixture(scope="module")
def tiny_vlm(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised LLaVA (CLIP vision tower + Llama) with a BPE tokenizer, saved and reloadable."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (
        CLIPImageProcessor,
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<image>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(
        ["a cat, a dog and a red motorcycle in a garage; describe this image"] * 20, trainer
    )
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}),
        tokenizer=tokenizer,
        patch_size=8,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template="{% for m in messages %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>"
        "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endfor %} Answer:",
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        text_config=LlamaConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=2,
            vocab_size=len(tokenizer),
            max_position_embeddings=256,
        ),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
    )
    torch.manual_seed(0)
    model_dir = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(config).save_pretrained(model_dir)
    processor.save_pretrained(model_dir)
    return model_dir


# ---------------------------------------------------------------------------------- sidecar
def test_bundled_sidecar_covers_the_bundled_photos() -> None:
    entries = load_sidecar(BUNDLED)
    assert set(entries) == set(BUNDLED_PHOTOS)
    for name, c in entries.items():
        assert 5 <= len(c.tags) <= 10, name
        # coarse to fine: each description is longer than the one before
        assert len(c.rough_understand) < len(c.middle_understand) < len(c.final_understand), name
        # crops are flipped: no left/right in the captions
        text = f"{c.rough_understand} {c.middle_understand} {c.final_understand}".lower().split()
        assert not {"left", "right"} & set(text), name
        # the paper's rule finds at least half of the tags in the photo's own coarse description
        found = sum(t in c.rough_understand.lower() for t in c.tags)
        assert found >= len(c.tags) / 2, name


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "top level must be an object"),
        (
            '{"a.png": {"rough_understand": "x", "middle_understand": "y", "final_understand": "z", "tags": []}}',
            "key 'a.png.tags'",
        ),
        (
            '{"a.png": {"rough_understand": "", "middle_understand": "y", "final_understand": "z", "tags": ["t"]}}',
            "key 'a.png.rough_understand'",
        ),
        (
            '{"a.png": {"rough_understand": "x", "middle_understand": "y", "final_understand": "z", "tags": ["t"], "mood": 1}}',
            "key 'a.png.mood'",
        ),
    ],
    ids=["json", "top-level", "no-tags", "empty-text", "unknown-key"],
)
def test_sidecar_errors_name_file_and_key(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "annotations.json"
    path.write_text(content)
    with pytest.raises(SidecarError, match=message) as err:
        load_sidecar(path)
    assert str(path) in str(err.value)
    with pytest.raises(SidecarError, match="not found"):
        load_sidecar(tmp_path / "missing.json")


def test_sidecar_backend_joins_by_source_and_reports_unknown_photos(tmp_path: Path) -> None:
    samples = _decoded(_samples(per_photo=2, photos=("astronaut.png", "coffee.png")), tmp_path / "shards")
    sidecar = tmp_path / "annotations.json"
    bundled = json.loads(BUNDLED.read_text())
    sidecar.write_text(json.dumps({"astronaut.png": bundled["astronaut.png"]}))
    result = annotate_samples(samples, SidecarBackend(sidecar), chunk_size=3)
    assert result.counts == {"annotated": 2, "cached": 0, "failed": 2}
    assert [f["key"] for f in result.failures] == ["coffee-000", "coffee-001"]
    assert "'coffee.png' is not in" in result.failures[0]["error"]
    record = result.records[0]
    assert record.key == "astronaut-000" and record.source == "astronaut.png"
    assert "astronaut" in record.tags and record.rough_understand.startswith("A portrait")
    assert from_text(record.degradation) == [tuple(i) for i in samples[0].degradation["operations"]]


def test_parse_tags() -> None:
    assert parse_tags("1. A cat, two dogs and grass;\n- Cat", 10) == ("a cat", "two dogs", "grass", "cat")
    assert parse_tags("<rough_image> sky </rough_image>", 10) == ("sky",)
    assert parse_tags("a, b, c", 2) == ("a", "b")
    assert parse_tags(" , ;", 5) == ()


def test_clean_text_keeps_one_printable_line() -> None:
    assert clean_text("a \x0fcat\ufffd\n on <final_image>a<|image|></final_image> mat") == "a cat on a mat"


# -------------------------------------------------------------------------------------- vlm
def test_vlm_backend_end_to_end_with_cache(tiny_vlm: Path, tmp_path: Path) -> None:
    samples = _decoded(_samples(per_photo=2), tmp_path / "shards")  # 2 photos x 2 degradations
    cfg = VlmParams(model=str(tiny_vlm), batch_size=3, max_new_tokens=6, cache_dir=str(tmp_path / "cache"))
    backend = VlmBackend(cfg)
    first = annotate_samples(samples, backend, chunk_size=4)
    assert first.counts["annotated"] + first.counts["failed"] == 4 and first.counts["cached"] == 0
    assert first.counts["annotated"] >= 2, first.failures
    # equal GTs (two degradations of a crop) get equal captions, computed once
    by_key = {r.key: r for r in first.records}
    if "astronaut-000" in by_key and "astronaut-001" in by_key:
        assert by_key["astronaut-000"].final_understand == by_key["astronaut-001"].final_understand
    entries = list((tmp_path / "cache").rglob("*.json"))
    assert len(entries) == len({r.source for r in first.records})
    assert entries[0].stem == pixel_hash(samples[0].hr) or entries[-1].stem == pixel_hash(samples[0].hr)

    # a re-run (fresh backend, same model) reads everything from the cache and gives the same records
    again = annotate_samples(samples, VlmBackend(cfg), chunk_size=4)
    assert again.counts == {
        "annotated": 0,
        "cached": first.counts["annotated"],
        "failed": first.counts["failed"],
    }
    assert again.records == first.records

    # a new image is the only one the model sees
    more = _decoded(_samples(per_photo=1, photos=("coffee.png",)), tmp_path / "more")
    mixed = annotate_samples(samples[:1] + more, VlmBackend(cfg), chunk_size=4)
    assert mixed.counts["cached"] == 1 and mixed.counts["annotated"] + mixed.counts["failed"] == 1

    # other prompts -> another fingerprint -> nothing cached
    other = cfg.model_copy(update={"prompts": cfg.prompts.model_copy(update={"rough": "What is this?"})})
    assert annotate_samples(samples[:1], VlmBackend(other), chunk_size=4).counts["cached"] == 0


def test_vlm_generation_errors_are_failures_not_crashes(
    tiny_vlm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = _decoded(_samples(per_photo=1), tmp_path / "shards")
    cfg = VlmParams(model=str(tiny_vlm), batch_size=1, max_new_tokens=4, cache_dir=str(tmp_path / "cache"))
    backend = VlmBackend(cfg)
    real_generate = backend.captioner.model.generate
    calls = {"n": 0}

    def flaky_generate(**kwargs):  # the second batch of each question runs out of memory
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("CUDA out of memory (simulated)")
        return real_generate(**kwargs)

    monkeypatch.setattr(backend.captioner.model, "generate", flaky_generate)
    result = annotate_samples(samples, backend, chunk_size=8)
    assert result.counts["failed"] >= 1
    assert any("out of memory" in f["error"] for f in result.failures)
    assert not list(
        (tmp_path / "cache").rglob(f"{pixel_hash(samples[1].hr)}.json")
    )  # failures are not cached


def test_vlm_bad_model_dir_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(VlmError, match="no config.json"):
        VlmBackend(VlmParams(model=str(tmp_path)))
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(VlmError, match="cannot load"):
        VlmBackend(VlmParams(model=str(tmp_path)))


# ------------------------------------------------------------------------------------ stage
def _run_stage(workdir: Path, params: dict) -> subprocess.CompletedProcess:
    """The stage as DVC runs it: `python -m stages.annotate` in the repo dir (exit codes, one-line errors)."""
    (workdir / "params.yaml").write_text(yaml.safe_dump(params))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "stages.annotate"],
        check=False,
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )


def _main(workdir: Path, params: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    """The stage's `main` in-process (fast: no second torch import)."""
    from stages.annotate import main

    monkeypatch.chdir(workdir)
    main(parse_params(params))


@pytest.mark.stage
def test_stage_sidecar_writes_records_and_report(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    encoded = _samples(per_photo=2, photos=("astronaut.png", "chelsea.png", "coffee.png"))
    write_shards(encoded[:4], tmp_path / "data/shards/train", shard_size=3)
    write_shards(encoded[4:], tmp_path / "data/shards/val", shard_size=3)
    (tmp_path / "data/raw").mkdir(parents=True)
    (tmp_path / "data/raw/annotations.json").write_text(BUNDLED.read_text())
    done = _run_stage(tmp_path, {})
    assert done.returncode == 0, done.stderr
    train = read_records(tmp_path / "data/annotations/train.jsonl")
    val = read_records(tmp_path / "data/annotations/val.jsonl")
    assert [r.key for r in train] == ["astronaut-000", "astronaut-001", "chelsea-000", "chelsea-001"]
    assert [r.source for r in val] == ["coffee.png", "coffee.png"]
    report = json.loads((tmp_path / "metrics/annotate.json").read_text())
    assert report["total"] == {"annotated": 6, "cached": 0, "failed": 0}
    assert report["train"]["annotated"] == 4 and report["backend"] == "sidecar"

    # a photo missing from the sidecar: reported, and the stage fails with one line naming it
    one = {"astronaut.png": json.loads(BUNDLED.read_text())["astronaut.png"]}
    (tmp_path / "data/raw/annotations.json").write_text(json.dumps(one))
    with pytest.raises(
        UsageError, match=r"^4 sample\(s\) not annotated \(first: chelsea-000: photo 'chelsea.png'"
    ):
        _main(tmp_path, {}, monkeypatch)
    report = json.loads((tmp_path / "metrics/annotate.json").read_text())
    assert report["total"]["failed"] == 4 and report["val"]["failures"][0]["source"] == "coffee.png"
    _main(tmp_path, {"annotate": {"allow_failures": True}}, monkeypatch)
    assert len(read_records(tmp_path / "data/annotations/train.jsonl")) == 2


@pytest.mark.stage
def test_stage_vlm_backend_and_its_cache(
    tmp_path: Path, tiny_vlm: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_shards(_samples(per_photo=2), tmp_path / "data/shards/train", shard_size=10)
    params = {
        "annotate": {
            "backend": "vlm",
            "allow_failures": True,
            "vlm": {"model": str(tiny_vlm), "max_new_tokens": 8, "batch_size": 2},
        }
    }
    _main(tmp_path, params, monkeypatch)
    report = json.loads((tmp_path / "metrics/annotate.json").read_text())
    assert report["total"]["cached"] == 0 and report["total"]["annotated"] + report["total"]["failed"] == 4
    assert report["total"]["annotated"] >= 1 and (tmp_path / ".cache/annotate").is_dir()
    records = read_records(tmp_path / "data/annotations/train.jsonl")
    _main(tmp_path, params, monkeypatch)
    again = json.loads((tmp_path / "metrics/annotate.json").read_text())
    assert again["total"]["annotated"] == 0 and again["total"]["cached"] == report["total"]["annotated"]
    assert read_records(tmp_path / "data/annotations/train.jsonl") == records


@pytest.mark.stage
def test_stage_errors_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing_shards = _run_stage(tmp_path, {})
    assert missing_shards.returncode == 2
    assert missing_shards.stderr.strip().splitlines()[-1].startswith("error: no shards under data/shards")
    write_shards(
        _samples(per_photo=1, photos=("astronaut.png",)), tmp_path / "data/shards/train", shard_size=10
    )
    with pytest.raises(UsageError, match="sidecar file not found"):
        _main(tmp_path, {}, monkeypatch)
    with pytest.raises(ParamsError, match="annotate.vlm.model"):
        _main(tmp_path, {"annotate": {"backend": "vlm"}}, monkeypatch)
