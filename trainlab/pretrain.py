"""trainlab pretrain: self-supervised pre-training of an image encoder (SimCLR's contrastive loss or
masked reconstruction) by train() itself, and model.init_from, which starts a classifier from it."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from . import checkpoint, data
from .config import Config, PretrainConfig
from .crossval import derive
from .data import augment as aug
from .errors import ConfigError
from .evaluate import read_run_config
from .models import build_model, feature_width, features, head_name
from .neighbours import find_neighbours
from .runs import RunDir
from .opening import apply_smoke, prepare_config
from .train import Result, train, train_step

# The task of a pre-training run's splits: the loop keeps its loss only, and every evaluation adds
# the linear probe's accuracy (train.evaluate).
TASK = "self_supervised"


class Objective(nn.Module):
    """What both objectives' modules hold: the classifier as `backbone` (its last layer untrained, as
    `model.init_from` replaces it) and encode(x) -> (B, F), the input of that last layer."""

    def __init__(self, backbone: nn.Module):
        super().__init__()
        self.backbone = backbone.requires_grad_(True)
        getattr(backbone, head_name(backbone)).requires_grad_(False)
        self.width = feature_width(backbone)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return features(self.backbone, x)


class Contrastive(Objective):
    """SimCLR (Chen et al. 2020): the classifier's encoder, then a projection head, on two views.

    forward(x): x (B, C, H, W) normalised images -> (2B, pretrain.projection): rows i and B + i are
    the projections of two augmentations of image i. x (B, 2, C, H, W), each image beside its partner
    (pair()): rows i and B + i are the projections of a view of each. The views and partners are
    drawn from torch's global generator, which every checkpoint saves (as for dropout), so resume
    draws the same ones.

    partners: for pretrain.positives=neighbours, the training images (N, C, H, W) as stored (uint8,
    or float as the data keeps it) and their nearest neighbours (N, k) int64, indices into them.
    """

    def __init__(self, backbone: nn.Module, cfg: PretrainConfig, mean: list[float], std: list[float],
                 partners: Optional[tuple[torch.Tensor, torch.Tensor]] = None, white: float = 1.0):
        super().__init__(backbone)
        hidden = cfg.projection_hidden or self.width
        self.projector = nn.Sequential(nn.Linear(self.width, hidden), nn.ReLU(), nn.Linear(hidden, cfg.projection))
        self.augment, self.white = cfg.augment, white  # white: data.Splits.white
        # Per-channel statistics (1, C, 1, 1): views are made on [0, white] pixels, so the area a shift
        # or rotation brings in is black, as in training augmentation (data.loader.Batches.prepare).
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)
        if partners is not None:  # not in checkpoints: on resume, pretraining_parts reads them from the cache
            self.register_buffer("images", partners[0], persistent=False)
            self.register_buffer("neighbours", partners[1], persistent=False)
            self.unit = 1 / data.pixel_scale(partners[0].dtype)  # a stored pixel's value -> [0, 1] units

    def pair(self, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) normalised images with their indices (B,) into the training split ->
        (B, 2, C, H, W): each image beside one of its nearest neighbours, drawn uniformly, normalised."""
        choice = torch.randint(self.neighbours.shape[1], index.shape, generator=torch.default_generator)
        partner = self.images[self.neighbours[index, choice.to(index.device)]].to(x.dtype)
        return torch.stack([x, (partner * self.unit - self.mean) / self.std], dim=1)

    def view(self, x: torch.Tensor) -> torch.Tensor:
        a, generator = self.augment, torch.default_generator
        if aug.on_pixels(a):
            x = (aug.pixels(x * self.std + self.mean, a, generator, self.white) - self.mean) / self.std
        return aug.add_noise(x, a.noise, generator) if a.noise else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first, second = x.unbind(1) if x.dim() == 5 else (x, x)
        views = torch.cat([self.view(first), self.view(second)])  # (2B, C, H, W)
        return self.projector(self.encode(views))


def neighbour_step(objective: Contrastive) -> Callable:
    """train()'s step_fn under pretrain.positives=neighbours: the batch's labels are the examples'
    indices (pretraining_parts), which pair() turns into each image's partner before train_step."""
    def step(model, batch, loss_fn, optimizer, *args, **kwargs):
        x, index = batch
        return train_step(model, (objective.pair(x, index), index), loss_fn, optimizer, *args, **kwargs)
    return step


def nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """SimCLR's NT-Xent loss. z: (2B, D), rows i and B + i the two views of one image.

    Each row's cosine similarities to the 2B - 1 others, over τ, are logits whose target is its
    other view: the mean cross-entropy over the 2B rows. Hand-written: torch has no NT-Xent.
    """
    n = z.shape[0] // 2
    z = F.normalize(z, dim=1)
    logits = z @ z.T / temperature                                     # (2B, 2B)
    self_pairs = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_pairs, float("-inf"))
    other_view = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(logits, other_view)


class MaskedReconstruction(Objective):
    """The classifier's encoder, then a decoder that redraws the image from a copy with patches hidden.

    forward(x): x (B, C, H, W) -> (B, 3, C*H*W): the reconstruction, the image, and the mask (1
    where a patch was hidden). Hidden pixels are set to 0, the training mean. Patches are drawn
    from torch's generator on x's device (checkpointed with the run).
    """

    def __init__(self, backbone: nn.Module, cfg: PretrainConfig, input_shape: tuple[int, ...]):
        super().__init__(backbone)
        self.decoder = nn.Sequential(nn.Linear(self.width, 512), nn.ReLU(), nn.Linear(512, math.prod(input_shape)))
        self.patch, self.ratio = cfg.patch, cfg.mask_ratio

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        p = self.patch
        hidden = torch.rand(b, 1, -(-h // p), -(-w // p), device=x.device) < self.ratio  # (B, 1, H/p, W/p)
        mask = hidden.repeat_interleave(p, 2).repeat_interleave(p, 3)[:, :, :h, :w].to(x.dtype).expand_as(x)
        reconstruction = self.decoder(self.encode(x * (1 - mask)))
        return torch.stack([reconstruction, x.flatten(1), mask.flatten(1)], dim=1)


def masked_mse(output: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error over the hidden pixels of MaskedReconstruction's output (B, 3, P)."""
    reconstruction, target, mask = output.unbind(1)
    return ((reconstruction - target).pow(2) * mask).sum() / mask.sum().clamp_min(1.0)


def pretrain(config: Config | dict | str | Path | None = None, *, out: Optional[str | Path] = None,
             resume: Optional[str | Path] = None, smoke: bool = False, data_dir: Optional[str] = None,
             on_epoch_end: Optional[Callable[[int, dict], Any]] = None,
             on_step_end: Optional[Callable[[int, int], Any]] = None) -> Result:
    """Pre-train the encoder of the image model `config` describes, without labels; returns train()'s Result.

    >>> result = pretrain("examples/fashion_pretrain.yaml")
    >>> result.metrics["test"]["probe_accuracy"]
    The run directory is train()'s (curves, checkpoints, resume, report); `model.init_from: RUN_DIR`
    then starts a `train` run from its encoder. data.labelled is ignored: every training image is used.
    """
    if resume is not None:
        cfg = read_run_config(RunDir(Path(resume)))  # the model is built before train() opens the run
    else:
        cfg = prepare_config(config)
        cfg = apply_smoke(cfg) if smoke else cfg
        if cfg.pretrain.objective == "contrastive":
            # NT-Xent's value depends on the negatives a batch holds: evaluation passes take batches
            # of train.batch_size too, so val.loss compares with train.loss (config.yaml records it).
            cfg = derive(cfg, {"eval.batch_size": cfg.train.batch_size})
    if cfg.model.init_from and resume is None:  # a train run given to --resume: train() names it
        raise ConfigError("model.init_from starts a `trainlab train` run from a pre-trained encoder; "
                          "`trainlab pretrain` begins from the seed's initialisation. Remove model.init_from.")
    splits, model, loss_fn, step_fn = pretraining_parts(cfg, data_dir)
    return train(cfg if resume is None else None, out=out, resume=resume, data_dir=data_dir, model=model,
                 loss_fn=loss_fn, step_fn=step_fn, splits=splits, on_epoch_end=on_epoch_end,
                 on_step_end=on_step_end)


def pretraining_parts(cfg: Config, data_dir: Optional[str] = None, search: bool = True
                      ) -> tuple[data.Splits, nn.Module, Callable, Optional[Callable]]:
    """What pre-training hands train() (and `trainlab check`, which times the same step): every training
    image (data.labelled ignored) under the self-supervised task, the encoder from the seed inside its
    objective's module, the loss, and the step_fn (None: train_step; neighbour_step for neighbours).

    `search=False` (check's dry run): neighbours not in the cache are not searched for; random
    partners stand in, which cost a step what the real ones do (one gather per batch)."""
    splits = data.load(derive(cfg, {"data.labelled": None}), data_dir)  # pre-training sees every training image
    if not splits.is_image:
        raise ConfigError(f"data.name={cfg.data.name}: `trainlab pretrain` pre-trains image encoders; "
                          "choose an image set (fashion-mnist, cifar10, imagefolder, ...).")
    splits = dataclasses.replace(splits, task=TASK)
    p = cfg.pretrain
    partners = None
    if p.objective == "contrastive" and p.positives == "neighbours":
        if not isinstance(splits.train, data.ArraySplit):
            raise ConfigError(f"pretrain.positives=neighbours searches every training image's pixels, which "
                              f"data.name={cfg.data.name} streams from files. Use pretrain.positives=views.")
        images, count = splits.train.x, len(splits.train)
        table = find_neighbours(images, p.neighbours, search)
        if table is None:  # a dry run, nothing cached: random partners cost a step what the real ones do
            table = torch.randint(count, (count, p.neighbours), generator=torch.Generator().manual_seed(0))
        partners = (images, table)
        # The objective needs each example's index to find its partner, and never its label: the
        # training split's labels become the indices, and the probe reads the labels from extra.
        labels = splits.train.y
        splits = dataclasses.replace(splits, train=dataclasses.replace(splits.train, y=torch.arange(len(labels))),
                                     extra={**splits.extra, "train_labels": labels})
    torch.manual_seed(cfg.train.seed)  # the same initial weights as `trainlab train` builds
    backbone = build_model(cfg.model, splits.input_shape, splits.num_classes)
    if p.objective == "contrastive":
        model: nn.Module = Contrastive(backbone, p, splits.mean, splits.std, partners, splits.white)
        loss_fn = lambda output, y: nt_xent(output, p.temperature)  # noqa: E731 (labels unused)
    else:
        model, loss_fn = MaskedReconstruction(backbone, p, splits.input_shape), masked_mse
    return splits, model, loss_fn, (neighbour_step(model) if partners is not None else None)


@torch.no_grad()
def probe_accuracy(s, batches) -> float:
    """Accuracy on `batches` of a linear probe on the encoder's features (s: train.Setup).

    The probe is scikit-learn's logistic regression on standardised features of the first
    pretrain.probe_examples training images with their labels; fitted anew at every evaluation.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from .data.loader import Batches

    model = s.model
    was_training = model.training
    model.eval()

    labels = s.splits.extra.get("train_labels")  # positives=neighbours: the training split's y are indices

    def encoded(examples) -> tuple:
        pairs = [(model.encode(x).double().cpu(), y.cpu()) for x, y in examples.epoch()]
        y = torch.cat([y for _, y in pairs])
        y = labels[y] if labels is not None and examples.split is s.splits.train else y
        return torch.cat([f for f, _ in pairs]).numpy(), y.numpy()

    fit = Batches(s.splits.train, s.splits, s.cfg.eval.batch_size, s.device, s.dtype,
                  limit=s.cfg.pretrain.probe_examples)
    fit_x, fit_y = encoded(fit)
    x, y = encoded(batches)
    model.train(was_training)
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(fit_x, fit_y)
    return float(probe.score(x, y))


def load_encoder(model: nn.Module, run_dir: str, freeze: bool = False) -> None:
    """model.init_from: put the encoder a `trainlab pretrain` run learned into `model` (every layer but
    the last); `freeze` keeps it fixed (weights and batch-norm statistics), so only the last layer trains."""
    run = RunDir(Path(run_dir))
    path = run.best if run.best.exists() else run.last
    if not path.exists():
        raise ConfigError(f"model.init_from={run_dir}: there is no checkpoint at {path}. Give the folder of a "
                          "`trainlab pretrain` run that finished an evaluation.")
    saved = checkpoint.load(path)["model"]
    head = head_name(model, "model.init_from")
    prefix = checkpoint.ENCODER_PREFIX
    encoder = {k[len(prefix):]: v for k, v in saved.items()
               if k.startswith(prefix) and not k.startswith(f"{prefix}{head}.")}
    if not encoder:
        raise ConfigError(f"model.init_from={run_dir}: {path} holds no pre-trained encoder; it was not written "
                          "by `trainlab pretrain`. Give a pre-training run's folder.")
    own = {k: v for k, v in model.state_dict().items() if not k.startswith(f"{head}.")}
    for name in sorted(set(own) | set(encoder)):
        here, there = own.get(name), encoder.get(name)
        if here is None or there is None or here.shape != there.shape:
            shape = lambda t: "absent" if t is None else f"of shape {tuple(t.shape)}"  # noqa: E731
            raise ConfigError(
                f"model.init_from={run_dir}: the pre-trained encoder does not fit this model: layer '{name}' is "
                f"{shape(here)} here but {shape(there)} in {path}. Use the model section the run was "
                "pre-trained with (its config.yaml).")
    model.load_state_dict({**model.state_dict(), **encoder})
    if freeze:
        for name, layer in model.named_children():
            if name != head:
                layer.requires_grad_(False)
                # Eval mode at every forward, whatever model.train() set: batch norm keeps its
                # pre-trained statistics and dropout stays off, so the probe sees fixed features.
                layer.register_forward_pre_hook(lambda module, args: module.eval() and None)
