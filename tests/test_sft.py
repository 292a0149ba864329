"""SFT engine and stage: the loss, the schedule, the plain backend, streaming (local and S3),
resume after a real SIGKILL to bit-identical weights, and the one-line errors on bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from realsr_r1.annotate.records import AnnotationRecord, write_records
from realsr_r1.evaluate.val import constant_answer_score, most_frequent
from realsr_r1.policy.interface import TokenScores
from realsr_r1.policy.tiny import TinyPolicy
from realsr_r1.rewards.scoring import Truth
from realsr_r1.train.backend import OptimConfig, build_backend, lr_factor
from realsr_r1.train.data import ShardStream, load_annotations, loader, shard_keys, shard_urls
from realsr_r1.train.sft import sft_loss
from tests.helpers import (
    annotate,
    kill_once_written,
    project,
    run_sft,
    tiny_policy_config,
    weights,
    write_split,
)


# ------------------------------------------------------------------------------ the pieces
def test_loss_is_the_mean_nll_of_each_kind_over_sampled_slots_only() -> None:
    lp = torch.tensor([[-1.0, -2.0, -3.0, -4.0], [-5.0, -6.0, -7.0, 0.0]])
    text = torch.tensor([[True, False, False, False], [False, True, False, False]])
    image = torch.tensor([[False, False, True, True], [False, False, True, False]])
    log_z = torch.full_like(lp, 2.0)
    loss, parts = sft_loss(TokenScores(lp, text, image, log_z), text_weight=0.5, image_weight=2.0, z_loss=0.1)
    # text slots: -1 and -6; image slots: -3, -4, -7; positions (0,1), (1,0), (1,3) carry nothing
    assert parts["text_loss"].item() == pytest.approx(3.5)
    assert parts["image_loss"].item() == pytest.approx(14 / 3)
    assert loss.item() == pytest.approx(0.5 * 3.5 + 2.0 * 14 / 3 + 0.1 * 4.0)


def test_lr_warms_up_then_follows_the_cosine_to_its_floor() -> None:
    cfg = OptimConfig(lr=1.0, weight_decay=0.0, warmup_steps=4, total_steps=14, schedule="cosine", min_lr_ratio=0.1)
    assert [lr_factor(cfg, s) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_factor(cfg, 4) == pytest.approx(1.0)
    assert lr_factor(cfg, 9) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert lr_factor(cfg, 14) == pytest.approx(0.1)
    assert lr_factor(OptimConfig(lr=1.0, weight_decay=0.0, warmup_steps=2, total_steps=9), 8) == 1.0


def test_plain_backend_accumulation_equals_one_big_batch() -> None:
    """Two micro-batches of 2 with grad_accum 2 make the same AdamW step as one batch of 4."""
    x, y = torch.randn(4, 3, generator=torch.Generator().manual_seed(0)), torch.randn(4, 1)

    def trained(accum: int) -> torch.Tensor:
        torch.manual_seed(0)
        model = torch.nn.Linear(3, 1)
        backend = build_backend("plain", model, OptimConfig(lr=0.1, weight_decay=0.1, grad_accum=accum, grad_clip=0.5))
        for part in torch.chunk(torch.arange(4), accum):
            backend.backward(((model(x[part]) - y[part]) ** 2).mean())
            stepped = backend.step()
            assert (stepped is None) == (part[-1].item() != 3)
        return torch.cat([p.detach().flatten() for p in model.parameters()])

    torch.testing.assert_close(trained(2), trained(1))


def test_constant_answer_baseline_scores_the_most_frequent_text() -> None:
    texts = ["medium blur, downsample", "light noise", "medium blur, downsample"]
    assert most_frequent(texts) == "medium blur, downsample"
    truths = [Truth.from_text(t, [], torch.zeros(1).numpy()) for t in ("medium blur, downsample", "heavy noise")]
    score = constant_answer_score("medium blur, downsample", truths)
    assert 0.0 < score < 1.0  # right on the first, not on the second


# ------------------------------------------------------------------------------ a tiny run
@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory, tiny_parts) -> Path:
    return project(tmp_path_factory.mktemp("sft"), tiny_parts)


UNTRAINED = ("sft", "metrics", "plots", "checkpoints")  # what a run adds: copy a project without it


@pytest.fixture(scope="module")
def trained(workdir: Path) -> Path:
    """`workdir` after one whole run of the stage (checkpoints, models/sft, metrics, plots)."""
    first = run_sft(workdir)
    _, err = first.communicate(timeout=600)
    assert first.returncode == 0, err
    return workdir


@pytest.mark.stage
def test_stage_resumes_after_sigkill_to_bit_identical_weights(workdir: Path, trained: Path, tmp_path: Path) -> None:
    import shutil

    other = tmp_path / "killed"
    shutil.copytree(workdir, other, ignore=shutil.ignore_patterns(*UNTRAINED))

    checkpoints = other / "checkpoints/sft"
    kill_once_written(run_sft(other, start_new_session=True), checkpoints / "step-0000002")
    assert not (other / "models/sft").exists()
    resumed = run_sft(other)
    _, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    assert "resumed from" in err

    a, b = weights(workdir), weights(other)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert load_file(str(workdir / "models/sft/projector.safetensors")).keys()
    policy = TinyPolicy.from_pretrained(workdir / "models/sft")
    assert policy.record.runs[-1] == {"stage": "sft", "steps": 6}
    init = load_file(str(workdir / "models/policy_init/backbone/model.safetensors"))
    assert any(not torch.equal(a[k], init[k]) for k in a)  # it trained
    metrics = json.loads((workdir / "metrics/sft.json").read_text())
    assert metrics["early"]["step"] == 3 and metrics["final"]["step"] == 6
    assert set(metrics["final"]["psnr_y"]) == {"sampled", "expected", "bicubic", "tokenizer"}
    curve = (workdir / "plots/sft/train.csv").read_text().splitlines()
    assert curve[0].split(",")[:4] == ["step", "loss", "text_loss", "image_loss"] and len(curve) == 7
    assert "tokens_per_s" not in curve[0]  # timing: in speed.csv, out of the files dvc.lock hashes
    for name in ("train.csv", "val.csv"):  # a resumed run writes the same curves
        assert (other / "plots/sft" / name).read_bytes() == (workdir / "plots/sft" / name).read_bytes()
    speed = (workdir / "plots/sft/speed.csv").read_text().splitlines()
    assert speed[0] == "step,tokens_per_s" and len(speed) == 7
    assert json.loads((other / "metrics/sft.json").read_text()) == metrics  # nothing timing-dependent
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-0000004", "step-0000006"]  # keep_last 2


@pytest.mark.stage
def test_a_checkpoint_half_written_when_killed_is_ignored(workdir: Path, trained: Path, tmp_path: Path) -> None:
    """What a kill during a checkpoint write leaves (a temporary folder) is removed, never resumed."""
    import shutil

    other = tmp_path / "w"
    shutil.copytree(workdir, other, ignore=shutil.ignore_patterns("models/sft", "metrics", "plots"))
    ckpt = other / "checkpoints/sft"
    shutil.rmtree(ckpt / "step-0000006")
    half = ckpt / ".step-0000006.tmp-6"
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"trunc")
    proc = run_sft(other)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err
    assert "resumed from checkpoints/sft/step-0000004" in err and not half.exists()
    a, b = weights(workdir), weights(other)
    assert all(torch.equal(a[k], b[k]) for k in a)


# ------------------------------------------------------------------------------ bad input
def bad_run(root: Path, tmp_path: Path, sft: dict | None = None) -> tuple[int, str]:
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["sft"].update(sft or {})
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    proc = run_sft(root, str(path))
    _, err = proc.communicate(timeout=300)
    return proc.returncode, err.strip()


@pytest.mark.parametrize("case", ["batch_size", "shards", "annotations", "readers", "deepspeed", "model_size"])
@pytest.mark.stage
def test_bad_input_is_one_line_exit_2_and_nothing_written(case: str, workdir: Path, tmp_path: Path, tiny_parts) -> None:
    import shutil

    root = tmp_path / "w"
    shutil.copytree(workdir, root, ignore=shutil.ignore_patterns(*UNTRAINED))
    sft, expect = {}, ""
    if case == "batch_size":
        sft, expect = {"batch_size": 0}, "sft.batch_size"
    elif case == "shards":
        sft, expect = {"shards": "data/nowhere"}, "data/nowhere/train"
    elif case == "annotations":
        annotate(root / "data/shards/train", root / "data/annotations/train.jsonl", skip=1)
        expect = "data/annotations/train.jsonl"
    elif case == "readers":  # one train shard for 2 processes x 2 workers; stopped before the launcher starts
        sft = {"launcher": "deepspeed", "num_processes": 2, "workers": 2}
        expect = "sft.shards: 1 train shard(s) for 2 process(es) x 2 DataLoader worker(s), 4 needed"
    elif case == "deepspeed":
        sft, expect = {"deepspeed": "configs/nowhere.json"}, "sft.deepspeed: configs/nowhere.json"
    else:  # checkpoints of a wider model in the checkpoint folder
        _, image_tokenizer, text_tokenizer = tiny_parts
        wide = TinyPolicy.build(tiny_policy_config(hidden_size=48), text_tokenizer, image_tokenizer)
        from realsr_r1.train.checkpoint import Checkpoints

        backend = build_backend("plain", wide, OptimConfig(lr=1e-3, weight_decay=0.0))
        Checkpoints(root / "checkpoints/sft", {}, 2).save(backend, wide, 2, {})
        expect = "checkpoints/sft/step-0000002/run.json"
    code, err = bad_run(root, tmp_path, sft)
    assert code == 2, err
    assert len(err.splitlines()) == 1 and expect in err, err
    assert not (root / "models/sft").exists() and not (root / "metrics").exists() and not (root / "plots").exists()


# ------------------------------------------------------------------------------ streaming
def test_workers_split_the_shards_and_the_epoch_order_is_seeded(tmp_path: Path) -> None:
    for i, seed in enumerate((5, 6, 7)):
        write_split(tmp_path / f"part{i}", 4, seed)
        (tmp_path / "train").mkdir(exist_ok=True)
        (tmp_path / f"part{i}/shard-000000.tar").rename(tmp_path / f"train/shard-{i:06d}.tar")
    urls = shard_urls(str(tmp_path), "train")
    keys = shard_keys(urls)
    records = {k: AnnotationRecord(k, "x", "light noise", "a", "b", "c") for k in keys}

    def epoch(workers: int, epoch: int) -> list[str]:
        stream = ShardStream(urls, records, 4, seed=0)
        stream.set_epoch(epoch)
        return [s.key for batch in loader(stream, 3, workers) for s in batch]

    two = epoch(2, 0)
    assert sorted(two) == sorted(keys)  # every sample once, though two workers read
    assert epoch(2, 0) == two and epoch(2, 1) != two  # seeded per epoch
    assert sorted(epoch(0, 0)) == sorted(keys)


@pytest.mark.server
def test_shards_stream_from_s3(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import boto3

    from tests.servers import MotoS3, s3_env

    write_split(tmp_path / "train", 4, 8)
    server = MotoS3(tmp_path)
    try:
        for key, value in s3_env(server.url).items():
            monkeypatch.setenv(key, value)
        s3 = boto3.client("s3", endpoint_url=server.url)
        s3.create_bucket(Bucket="shards")
        s3.upload_file(str(tmp_path / "train/shard-000000.tar"), "shards", "run/train/shard-000000.tar")
        urls = shard_urls("s3://shards/run", "train")
        assert urls == ["s3://shards/run/train/shard-000000.tar"]
        local = ShardStream(shard_urls(str(tmp_path), "train"), {}, 1, 0, shuffle=False)
        records = {k: AnnotationRecord(k, "x", "light noise", "a", "b", "c") for k in shard_keys(local.urls)}
        local.annotations = records
        remote = list(ShardStream(urls, records, 1, 0, shuffle=False))
        assert [s.key for s in remote] == [s.key for s in local]
        assert all((a.lr == b.lr).all() and (a.chain.final_image == b.chain.final_image).all() for a, b in zip(remote, local, strict=True))
        with pytest.raises(ValueError, match="no annotation"):
            list(ShardStream(urls, {}, 1, 0, shuffle=False))
    finally:
        server.stop()


def test_annotations_join_names_the_file(tmp_path: Path) -> None:
    write_records(tmp_path / "a.jsonl", [AnnotationRecord("k1", "x", "light noise", "a", "b", "c")])
    assert set(load_annotations(tmp_path / "a.jsonl", ["k1"])) == {"k1"}
    with pytest.raises(ValueError, match=r"a\.jsonl: no annotation for 1 shard sample\(s\), e.g. 'k2'"):
        load_annotations(tmp_path / "a.jsonl", ["k1", "k2"])


def test_the_val_subset_spans_the_split() -> None:
    """The evaluation's val samples come from across the split, not the first crops of one photo."""
    from realsr_r1.data.shards import evenly_spaced

    photos = [f"photo{i // 512}" for i in range(2048)]  # shard order: 512 samples per photo
    assert set(evenly_spaced(photos, 64)) == {"photo0", "photo1", "photo2", "photo3"}
    assert evenly_spaced(list(range(10)), 3) == [0, 3, 6] and evenly_spaced([1, 2], 5) == [1, 2]
