"""trainlab pretrain on real Fashion-MNIST: SimCLR and masked reconstruction lower their losses, the
linear probe reads the encoder, model.init_from / model.freeze start a classifier from it, resume is
exact, data.labelled keeps a stratified subset, and the bad input is refused clearly."""

import math

import numpy as np
import pytest
import torch
import yaml

from trainlab import checkpoint, data
from trainlab.config import build_config
from trainlab.errors import Interrupted
from trainlab.models import build_model
from trainlab import neighbours
from trainlab.neighbours import find_neighbours, nearest_neighbours
from trainlab.pretrain import Contrastive, masked_mse, nt_xent, pretrain, pretraining_parts
from trainlab.runs import read_json
from trainlab.train import train

from conftest import FASHION, ROOT, ctrl_c_at, run_cli, run_main


# Tiny models on a busy 2-core machine: one thread, module-wide (the module's fixtures train too).
pytestmark = pytest.mark.usefixtures("one_thread_module")


def _config(**changes) -> dict:
    """examples/fashion_pretrain.yaml on a stratified 2,000-image subset (1,800 train, 200 val)."""
    assert (FASHION / "train-images-idx3-ubyte.gz").is_file(), "Fashion-MNIST missing: run `make setup`"
    raw = yaml.safe_load((ROOT / "examples/fashion_pretrain.yaml").read_text())
    raw["data"]["limit"] = 2000
    raw["train"].update(epochs=3, progress="none")
    raw["pretrain"]["probe_examples"] = 1000
    raw["eval"] = {"limit": 1000}  # the final test pass: 1,000 of the 10,000 test images
    for key, value in changes.items():
        section, name = key.split("__")
        raw.setdefault(section, {})[name] = value
    return raw


def _classifier(**changes) -> dict:
    """examples/fashion_cnn.yaml on the same subset, 300 labels kept."""
    raw = yaml.safe_load((ROOT / "examples/fashion_cnn.yaml").read_text())
    raw["data"].update(limit=2000, labelled=300)
    raw["train"].update(epochs=2, progress="none")
    raw["eval"] = {"limit": 1000}
    for key, value in changes.items():
        section, name = key.split("__")
        raw[section][name] = value
    return raw


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    return pretrain(_config(), out=tmp_path_factory.mktemp("pt") / "run")


def test_nt_xent_is_simclrs_formula():
    # Reference: SimCLR's eq. 1 written out row by row, in float64 like the tested call, so the two
    # differ by the rounding of different summation orders: a few ulps of values below 10 (< 1e-13).
    z = torch.randn(8, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tau, n = 0.5, 4
    u = z / z.norm(dim=1, keepdim=True)
    rows = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        others = [math.exp(float(u[i] @ u[k]) / tau) for k in range(2 * n) if k != i]
        rows.append(-math.log(math.exp(float(u[i] @ u[j]) / tau) / sum(others)))
    assert abs(float(nt_xent(z, tau)) - sum(rows) / len(rows)) < 1e-13
    # Two identical views of 4 orthogonal images: the positives stand out, the loss is far lower.
    aligned = torch.eye(4, 5, dtype=torch.float64).repeat(2, 1)
    assert float(nt_xent(aligned, tau)) < float(nt_xent(z, tau)) - 1.0


def test_masked_mse_counts_hidden_pixels_only():
    reconstruction = torch.tensor([[1.0, 5.0, 3.0]])
    target = torch.tensor([[0.0, 0.0, 0.0]])
    mask = torch.tensor([[1.0, 0.0, 1.0]])  # the 5.0 is a visible pixel's: not scored
    output = torch.stack([reconstruction, target, mask], dim=1)
    assert float(masked_mse(output, torch.zeros(1))) == (1.0 + 9.0) / 2


def test_contrastive_pretraining_lowers_its_loss_and_the_probe_reads_the_encoder(pretrained):
    rows = pretrained.history
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    train_losses = [r["train_loss"] for r in rows]
    assert train_losses == sorted(train_losses, reverse=True) and train_losses[-1] < train_losses[0] - 0.1
    # 10 classes: a probe that read nothing would score about 0.1.
    assert all(r["val_probe_accuracy"] > 0.5 for r in rows)
    summary = read_json(pretrained.run_dir / "summary.json")
    assert set(summary["metrics"]["test"]) == {"loss", "probe_accuracy"}
    assert summary["metrics"]["test"]["probe_accuracy"] > 0.5
    saved = checkpoint.load(pretrained.run_dir / "checkpoints" / "best.pt")["model"]
    assert any(k.startswith("projector.") for k in saved) and any(k.startswith("backbone.") for k in saved)
    code = run_cli("report", pretrained.run_dir).returncode
    assert code == 0 and "probe_accuracy" in (pretrained.run_dir / "report.html").read_text()


def test_masked_reconstruction_lowers_its_loss(tmp_path):
    result = pretrain(_config(pretrain__objective="masked", train__epochs=2), out=tmp_path / "run")
    losses = [r["train_loss"] for r in result.history]
    assert losses[1] < losses[0]
    assert result.metrics["val"]["probe_accuracy"] > 0.5


def test_freeze_trains_the_last_layer_only_and_fine_tuning_moves_the_encoder(pretrained, tmp_path):
    encoder = {k[len("backbone."):]: v for k, v in
               checkpoint.load(pretrained.run_dir / "checkpoints" / "best.pt")["model"].items()
               if k.startswith("backbone.") and not k.startswith("backbone.13.")}  # 13: the cnn's last layer
    probe = train(_classifier(model__init_from=str(pretrained.run_dir), model__freeze=True, train__epochs=10,
                              train__batch_size=32, optim__lr=0.01), out=tmp_path / "probe")
    weights = probe.model.state_dict()
    for name, value in encoder.items():  # weights and batch-norm statistics, bit for bit
        assert torch.equal(weights[name], value), name
    # The head learned (10 classes: chance is 0.1; the probe of the fixture scores > 0.5 on 1,000).
    assert probe.metrics["test"]["accuracy"] > 0.5
    tuned = train(_classifier(model__init_from=str(pretrained.run_dir)), out=tmp_path / "tuned")
    moved = [n for n, v in encoder.items() if v.is_floating_point() and not torch.equal(tuned.model.state_dict()[n], v)]
    assert "0.weight" in moved and "9.weight" in moved


def test_labelled_keeps_a_stratified_subset_and_the_statistics_of_every_image():
    raw = _classifier()
    raw["data"].pop("limit")
    everything = data.load(build_config({**raw, "data": {**raw["data"], "labelled": None}}))
    few = data.load(build_config({**raw, "data": {**raw["data"], "labelled": 600}}))
    assert len(few.train) == 600 and torch.bincount(few.train.y).tolist() == [60] * 10
    assert few.mean == everything.mean and few.std == everything.std
    assert torch.equal(few.val.y, everything.val.y)  # the validation split is untouched


def test_neighbours_are_the_nearest_images_and_each_partner_is_one_of_them():
    from sklearn.datasets import load_digits

    digits = load_digits()  # 1,797 real 8x8 digits, pixels 0..16
    images = torch.tensor(digits.images / 16.0, dtype=torch.float32).unsqueeze(1)   # (N, 1, 8, 8) in [0, 1]
    found = nearest_neighbours(images, 5)
    assert found.shape == (len(images), 5) and found.dtype == torch.int64
    distances = torch.cdist(images.flatten(1).double(), images.flatten(1).double())  # (N, N)
    distances.fill_diagonal_(math.inf)
    nearest = distances.topk(5, largest=False)
    # The same neighbours as a direct search, up to ties: the k-th distance of each row agrees. Pixels
    # are multiples of 1/16, so two different squared distances differ by at least 1/256 = 4e-3, far
    # above the rounding of scikit-learn's float32 ones (a few x 6e-8 x (|a|^2 + |b|^2 <= 128) < 1e-4):
    # it can only reorder exact ties, which this float64 matrix gives equal to ~1e-15.
    found_distances = distances.gather(1, found).sort(1).values
    assert torch.allclose(found_distances, nearest.values, atol=1e-5)
    assert not (found == torch.arange(len(images)).unsqueeze(1)).any()
    # Nearest digits mostly show the same digit (1-NN is about 98% accurate on this set): a search that
    # returned the wrong rows would score about 0.1.
    labels = torch.tensor(digits.target)
    assert (labels[found] == labels.unsqueeze(1)).float().mean() > 0.9
    cfg = build_config({"model": {"name": "cnn", "channels": [4, 8]}, "data": {"name": "digits"}})
    objective = Contrastive(build_model(cfg.model, (1, 8, 8), 10), cfg.pretrain, [0.3], [0.4], (images, found))
    index = torch.tensor([0, 5, 1796, 5])
    x = (images[index] - 0.3) / 0.4
    pair = objective.pair(x, index)
    assert pair.shape == (4, 2, 1, 8, 8) and torch.equal(pair[:, 0], x)
    for row, i in enumerate(index):
        partner = pair[row, 1] * 0.4 + 0.3
        assert any(torch.allclose(partner, images[j], atol=1e-6) for j in found[i]), i


def _digit_images() -> torch.Tensor:
    from sklearn.datasets import load_digits
    return torch.tensor(load_digits().images / 16.0, dtype=torch.float32).unsqueeze(1)   # (1797, 1, 8, 8)


class _Trap:
    """Unpickling this writes a file: evidence that the cache ran code from its file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_the_neighbour_table_is_searched_once_and_a_damaged_cache_file_is_searched_again(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLAB_CACHE", str(tmp_path / "cache"))
    images = _digit_images()
    first = find_neighbours(images, 3)
    file = neighbours.cache_file(images, 3)
    assert file.is_file() and torch.equal(first, nearest_neighbours(images, 3))
    searches = []
    search = neighbours.nearest_neighbours
    monkeypatch.setattr(neighbours, "nearest_neighbours", lambda *args: searches.append(args) or search(*args))
    assert torch.equal(find_neighbours(images, 3), first) and not searches  # read back, not searched
    # Other images (one fewer, or one pixel changed) or another k are other tables.
    changed = images.clone()
    changed[0, 0, 0, 0] += 1 / 16
    assert len({file, neighbours.cache_file(images[1:], 3), neighbours.cache_file(changed, 3),
                neighbours.cache_file(images, 4)}) == 4
    marker = tmp_path / "unpickled"
    pickled = np.empty(1, dtype=object)
    pickled[0] = _Trap(marker)
    wrong_shape, out_of_range = first[:-1].numpy(), first.numpy().copy()
    out_of_range[7, 2] = len(images)
    for damage in (file.read_bytes()[:150], pickled, wrong_shape, out_of_range, first.numpy().astype(np.int32)):
        if isinstance(damage, bytes):
            file.write_bytes(damage)
        else:
            with open(file, "wb") as f:
                np.save(f, damage, allow_pickle=True)
        searches.clear()
        assert neighbours.cached_neighbours(images, 3) is None
        assert torch.equal(find_neighbours(images, 3), first) and len(searches) == 1  # searched again
        assert torch.equal(neighbours.cached_neighbours(images, 3), first)             # and stored again
    assert not marker.exists()
    # An unwritable cache costs the search, nothing else.
    monkeypatch.setenv("TRAINLAB_CACHE", str(file))  # a file where the folder should be
    assert torch.equal(find_neighbours(images, 3), first)


def test_a_dry_run_neither_searches_nor_caches_and_its_stand_in_partners_are_valid(tmp_path, monkeypatch):
    monkeypatch.setenv("TRAINLAB_CACHE", str(tmp_path))
    monkeypatch.setattr(neighbours, "nearest_neighbours", lambda *args: pytest.fail("searched in a dry run"))
    cfg = build_config(_config(data__limit=600))
    splits, model, _, step_fn = pretraining_parts(cfg, search=False)
    table = model.neighbours
    assert step_fn is not None and table.shape == (len(splits.train), cfg.pretrain.neighbours)
    assert 0 <= int(table.min()) and int(table.max()) < len(splits.train) and not list(tmp_path.iterdir())


def test_pretraining_interrupted_mid_epoch_resumes_exactly(tmp_path):
    # The example's neighbour positives: the views, and the partners besides, come from the global
    # generator the checkpoint saves (the `views` path draws the same views, without partners).
    cfg = _config(data__limit=600, train__epochs=2, train__checkpoint_every=1, eval__limit=200,
                  pretrain__probe_examples=200)
    whole = pretrain(cfg, out=tmp_path / "whole")
    # The probe reads real labels (the neighbours run's training split holds example indices instead).
    assert whole.metrics["test"]["probe_accuracy"] > 0.5

    interrupt = ctrl_c_at(2, 1)

    with pytest.raises(Interrupted):
        pretrain(cfg, out=tmp_path / "cut", on_step_end=interrupt)
    resumed = pretrain(resume=tmp_path / "cut")
    assert resumed.history[-1]["train_loss"] == whole.history[-1]["train_loss"]
    assert resumed.metrics == whole.metrics
    for name, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], value), name


def test_bad_input_is_refused_clearly(pretrained, tmp_path, capsys):
    def cli(*args) -> tuple[int, str]:  # trainlab's main in this process: exit code and stderr
        done = run_main(capsys, *args)
        return done.returncode, done.stderr

    run = str(pretrained.run_dir)
    cnn = ROOT / "examples/fashion_cnn.yaml"
    refused = iter(range(10))  # a refused run may still write its config.yaml: into tmp_path, not the repo

    def out() -> tuple:
        return "--out", tmp_path / f"refused{next(refused)}"

    code, err = cli("train", "-c", cnn, f"model.init_from={run}", "model.channels=[8,32]", "--smoke", *out())
    assert code == 2 and "layer '0.bias' is of shape (8,) here but of shape (16,)" in err
    plain = train(_classifier(), out=tmp_path / "plain")
    code, err = cli("train", "-c", cnn, f"model.init_from={plain.run_dir}", "--smoke", *out())
    assert code == 2 and "not written by `trainlab pretrain`" in err
    code, err = cli("train", "-c", cnn, f"model.init_from={tmp_path / 'nothing'}", "--smoke", *out())
    assert code == 2 and "no checkpoint" in err
    code, err = cli("pretrain", "-c", ROOT / "examples/wine_tabular.yaml", "--smoke", *out())
    assert code == 2 and "pre-trains image encoders" in err
    from PIL import Image
    for label in ("a", "b"):  # a folder of images is streamed from its files: no pixels to search
        for i in range(4):
            (tmp_path / "folder" / label).mkdir(parents=True, exist_ok=True)
            Image.new("L", (8, 8), 60 * i).save(tmp_path / "folder" / label / f"{i}.png")
    code, err = cli("pretrain", "-c", ROOT / "examples/fashion_pretrain.yaml", "data.name=imagefolder",
                    f"data.path={tmp_path / 'folder'}", "data.val_fraction=0.25", "--smoke", *out())
    assert code == 2 and "pretrain.positives=neighbours" in err and "positives=views" in err
    code, err = cli("train", "-c", cnn, "model.freeze=true", "--smoke", *out())
    assert code == 2 and "model.init_from" in err
    code, err = cli("train", "-c", cnn, "data.limit=1000", "data.labelled=5000", *out())
    assert code == 3 and "data.labelled=5000" in err
    code, err = cli("evaluate", run)
    assert code == 2 and "model.init_from=" in err
    code, err = cli("train", "--resume", run)
    assert code == 2 and f"trainlab pretrain --resume {run}" in err
