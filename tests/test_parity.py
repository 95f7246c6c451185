"""train() against a 20-line plain PyTorch loop (the seed's code): same weights, same accuracy."""

import torch
import torch.nn as nn
import torch.nn.functional as F

from trainlab import data
from trainlab.config import load_config
from trainlab.data.loader import epoch_seed
from trainlab.train import train

from conftest import ROOT


def reference_loop(x, y, epochs, seed=0, batch_size=64):
    """The seed document's loop, made runnable on tensors: the yardstick, not trainlab code."""
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    for epoch in range(1, epochs + 1):
        # The same example order trainlab draws (a randperm per epoch, seeded): only the loop differs.
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        for i in range(0, len(y), batch_size):
            index = order[i:i + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x[index]), y[index])
            loss.backward()
            optimizer.step()
    return net


def test_seed_mlp_matches_a_plain_pytorch_loop(tmp_path, fashion_available):
    cfg = load_config(ROOT / "examples/seed_mlp.yaml", ["data.limit=12000", "train.epochs=2", "train.progress=none"])
    result = train(cfg, out=tmp_path / "run")

    splits = data.load(cfg)
    mean, std = splits.mean[0], splits.std[0]
    normalise = lambda s: (s.x.float() / 255 - mean) / std  # noqa: E731
    net = reference_loop(normalise(splits.train), splits.train.y, epochs=2)

    for ours, ref in zip(result.model.parameters(), net.parameters()):
        torch.testing.assert_close(ours, ref, rtol=0, atol=2e-5)
    with torch.no_grad():
        ref_accuracy = (net(normalise(splits.test)).argmax(1) == splits.test.y).float().mean().item()
    assert abs(result.metrics["test"]["accuracy"] - ref_accuracy) <= 2 / len(splits.test)
