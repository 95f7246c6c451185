"""The whole config: its nine sections, the run's name, and the checks that span sections."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from .data import TEXT_SETS, DataConfig
from .loop import EvalConfig, RegularizeConfig, TrainConfig
from .model import ModelConfig
from .optim import LossConfig, OptimConfig, ScheduleConfig
from .pretrain import PretrainConfig
from .section import Section


class Config(Section):
    """The whole config: nine sections and the run's name."""

    data: DataConfig = Field(DataConfig(), description="the dataset, its splits and how batches are fed")
    model: ModelConfig = Field(ModelConfig(), description="the network")
    loss: LossConfig = Field(LossConfig(), description="the loss function")
    optim: OptimConfig = Field(OptimConfig(), description="the optimiser (torch.optim)")
    schedule: ScheduleConfig = Field(ScheduleConfig(), description="the learning-rate schedule")
    regularize: RegularizeConfig = Field(RegularizeConfig(), description="L1/L2 penalties and data augmentation")
    train: TrainConfig = Field(TrainConfig(), description="the training loop")
    eval: EvalConfig = Field(EvalConfig(), description="evaluation passes")
    pretrain: PretrainConfig = Field(PretrainConfig(), description="self-supervised pre-training (`trainlab pretrain`)")
    name: str = Field("run", description=
        "run name, used in the default run directory `runs/<name>-<timestamp>`; the config file's stem "
        "unless set")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v.strip() or v in (".", "..") or any(c in v for c in "/\\\0"):
            raise ValueError("must be a non-empty folder name without '/', '\\' or NUL characters (it names the "
                             "run directory runs/<name>-<timestamp>)")
        return v

    @model_validator(mode="after")
    def _cross_checks(self) -> "Config":
        if self.schedule.name == "reduce_on_plateau" and self.schedule.warmup_epochs:
            raise ValueError("schedule.warmup_epochs cannot be combined with reduce_on_plateau")
        if self.schedule.name == "onecycle" and self.schedule.warmup_epochs:
            raise ValueError("onecycle has its own warm-up (schedule.pct_start); set schedule.warmup_epochs=0")
        if self.data.name in ("csv", "imagefolder", "text") and not self.data.path:
            raise ValueError(f"data.name={self.data.name} needs data.path (the file or folder to read)")
        text, gpt = self.data.name in TEXT_SETS, self.model.name == "gpt"
        if text != gpt:
            raise ValueError(f"model.name={self.model.name} and data.name={self.data.name} do not fit: text data "
                             "(text, tinyshakespeare) trains model.name=gpt, and gpt trains on text")
        if self.data.test_fraction == 0 and not text:
            raise ValueError("data.test_fraction=0 is for text data only: other sets without an official test "
                             "split need one carved out")
        if self.data.tokenizer == "bpe" and text and self.data.vocab_size is None:
            raise ValueError("data.tokenizer=bpe needs data.vocab_size (e.g. 512: 256 byte tokens + 256 merges)")
        if gpt and self.model.n_embd % self.model.n_head:
            raise ValueError(f"model.n_embd={self.model.n_embd} is not divisible by model.n_head="
                             f"{self.model.n_head}: each head gets n_embd / n_head channels")
        if self.model.freeze and not self.model.init_from:
            raise ValueError("model.freeze=true keeps a pre-trained encoder fixed: set model.init_from to a "
                             "`trainlab pretrain` run directory, or model.freeze=false")
        if text and (self.model.init_from or self.data.labelled):
            key = "model.init_from" if self.model.init_from else "data.labelled"
            raise ValueError(f"{key} is for image and tabular classifiers; a language model has no labels to "
                             "keep or encoder to start from")
        if self.train.steps is not None:
            every = self.eval.every or self.train.steps
            if self.train.steps % every:
                low = self.train.steps // every * every
                raise ValueError(f"eval.every={every} does not divide train.steps={self.train.steps}: use "
                                 f"train.steps={low or every} or {low + every}")
        return self

    def to_dict(self) -> dict:
        """Plain YAML-ready dict (tuples become lists)."""
        return self.model_dump(mode="json")
