"""The data section and the augmentation sections: which dataset, its splits, how batches are fed and augmented."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from .section import Section

DATASETS = (
    "mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "imagefolder", "csv",
    "digits", "iris", "wine", "breast_cancer", "diabetes", "text", "tinyshakespeare",
)
TEXT_SETS = ("text", "tinyshakespeare")   # token streams for language models (model.name=gpt)
SEED_LIMIT = 2**32  # data.split_seed seeds numpy's RandomState, which takes 0 .. 2**32 - 1


class AugmentConfig(Section):
    """Applied to the training split only, to image sets only (ignored for tabular data), as batched
    operations on the training device; validation and test batches are never augmented."""

    crop_padding: int = Field(0, ge=0, le=64, description=
                              "pixels of zero padding, then a random crop back to the original size")
    hflip: bool = Field(False, description="random horizontal flip with p = 0.5")
    shift: float = Field(0.0, ge=0, le=0.5, description=
                         "maximum random translation, as a fraction of the image side")
    rotate: float = Field(0.0, ge=0, le=180, description="maximum random rotation, degrees")
    resized_crop: float = Field(0.0, ge=0, lt=1, description=
        "a random square crop of between this fraction and all of the image's area, resized to the whole "
        "image (torchvision's RandomResizedCrop scale, aspect 1); 0 = off")
    brightness: float = Field(0.0, ge=0, le=1, description=
        "random brightness: pixels times a factor drawn from [1 - this, 1 + this] per image "
        "(torchvision's ColorJitter brightness); 0 = off")
    contrast: float = Field(0.0, ge=0, le=1, description=
        "random contrast: each image's pixels pulled toward or pushed from its mean grey by a factor "
        "drawn from [1 - this, 1 + this] (torchvision's ColorJitter contrast); 0 = off")
    noise: float = Field(0.0, ge=0, description=
                         "standard deviation of Gaussian noise added to the normalised input")


class DataConfig(Section):
    """Images are scaled to [0, 1] and normalised per channel with the training split's mean and std,
    on the device, per batch (streamed image folders use mean 0.5 and std 0.25 instead of a pass over
    the files); tabular features are standardised once with the training split's statistics."""

    name: Literal[DATASETS] = Field("fashion-mnist", description=
        "the dataset: MNIST-format sets, CIFAR, `imagefolder` (class folders) and `csv` (both read "
        "`data.path`), one of scikit-learn's bundled sets (`diabetes` is a regression), or text for a "
        "language model: `text` (a UTF-8 file or folder of .txt files at `data.path`) or `tinyshakespeare` "
        "(shipped with trainlab)")
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description=
        "fraction of the training split held out for validation (stratified, seeded by `data.split_seed`); "
        "0 = no validation split (then `train.monitor` must be `train.*`)")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0, description=
        "fraction carved out as the test split, only for sets without an official one (scikit-learn sets, "
        "csv, imagefolder without `test/`); text: the last fraction of the token stream (after val), "
        "0 = none (text only)")
    split_seed: int = Field(0, ge=0, lt=SEED_LIMIT, description=
        "seed of the train/val(/test) split and of `data.limit`, independent of `train.seed`")
    dir: Optional[str] = Field(None, description=
        "data root searched first, as `--data-dir` (which wins when both are given)")
    path: Optional[str] = Field(None, description=
        "the CSV file (`csv`) or the image folder root (`imagefolder`); required for those two")
    target: Optional[str] = Field(None, description="csv: the target column's name; null = the last column")
    task: Literal["auto", "classification", "regression"] = Field("auto", description=
        "csv: what the target is; `auto` = classification for text or at most 20 distinct integers, "
        "regression otherwise")
    image_size: int = Field(64, ge=8, description="imagefolder: images are resized to this square side, pixels")
    limit: Optional[int] = Field(None, ge=2, description=
        "use only N training examples (a stratified, seeded subset taken before the validation split, so "
        "train + val ≈ N); null = all; `--smoke` caps it at 512")
    loader: Literal["auto", "device", "stream"] = Field("auto", description=
        "`device`: the split lives on the training device as one tensor; `stream`: batches come through a "
        "DataLoader; `auto`: device unless the split exceeds 4 GiB (imagefolder always streams)")
    workers: int = Field(2, ge=0, description="DataLoader worker processes when streaming")
    tokenizer: Literal["char", "byte", "bpe"] = Field("char", description=
        "text: `char` (the characters of the text), `byte` (UTF-8 bytes, 256 ids) or `bpe` (byte-level BPE "
        "trained on the training split with Hugging Face tokenizers); saved as the run's tokenizer.json")
    vocab_size: Optional[int] = Field(None, ge=257, description=
        "text, `bpe` only: the vocabulary size to train (256 byte tokens plus merges); required for `bpe`")
    download: bool = Field(True, description=
        "download from the canonical address (SHA-256 checked) when no data root has the dataset")
    labelled: Optional[int] = Field(None, ge=2, description=
        "keep the labels of only N training examples (a stratified subset seeded by `data.split_seed`, taken "
        "after the validation split): the few-label experiment; `trainlab pretrain` still sees every "
        "training image; null = all")
