"""The pretrain section: what `trainlab pretrain`'s self-supervised objective is and how it is probed."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .data import AugmentConfig
from .section import Section


class PretrainConfig(Section):
    """`trainlab pretrain`: self-supervised pre-training of an image encoder (`mlp`, `cnn`, `resnet`) on
    the training images without their labels; `train` ignores this section."""

    objective: Literal["contrastive", "masked"] = Field("contrastive", description=
        "`contrastive`: SimCLR's NT-Xent loss between two augmented views of every image (the views are "
        "made on the device by `pretrain.augment`); `masked`: reconstruct the pixels of hidden patches")
    augment: AugmentConfig = Field(AugmentConfig(hflip=True, rotate=10, resized_crop=0.3, noise=0.2),
                                   description="contrastive: the augmentation that makes each view")
    temperature: float = Field(0.5, gt=0.0, le=10.0, description=
        "contrastive: the NT-Xent temperature τ (the loss of a batch of B images is over its 2B views; "
        "evaluation passes then take `train.batch_size` images at a time, as training does)")
    positives: Literal["views", "neighbours"] = Field("views", description=
        "contrastive: what each image's second view is made from. `views`: the image itself (SimCLR); "
        "`neighbours`: one of its `pretrain.neighbours` nearest training images in pixel space, drawn anew "
        "at every step (DrLIM's positives, Hadsell, Chopra & LeCun 2006), "
        "found before training with scikit-learn's NearestNeighbors; needs images held in memory")
    neighbours: int = Field(5, ge=1, le=100, description=
        "contrastive with positives=neighbours: how many nearest training images each image's partner is drawn from")
    projection_hidden: Optional[int] = Field(None, ge=1, description=
        "contrastive: width of the projection head's hidden layer; null = the encoder's output width")
    projection: int = Field(128, ge=1, description=
        "contrastive: output width of the projection head (a 2-layer MLP dropped after pre-training)")
    mask_ratio: float = Field(0.5, gt=0.0, lt=1.0, description="masked: the fraction of patches hidden")
    patch: int = Field(4, ge=1, description="masked: side of the square patches hidden, pixels")
    probe_examples: int = Field(5000, ge=10, description=
        "labelled training examples the linear probe is fitted on at every evaluation (scikit-learn's "
        "logistic regression on the encoder's features; scored as `val.probe_accuracy`)")
