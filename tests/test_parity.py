"""train() against a 20-line plain PyTorch loop (the seed's code): same weights, same accuracy.

Like is compared with like. trainlab runs with the same update kernel as the reference loop
(torch.optim.SGD's fused kernel, trainlab's default, or its for-loop with optim.fused=false) and
on the same input bits, so the two do the same float32 operations in the same order: the weights
must be bitwise equal, on any CPU. Two different code paths can only be compared to rounding:
the fused kernel against the for-loop update has a test of its own below, step by step from the
same state, where float32 arithmetic gives a bound; and trainlab's normalisation against the
seed's (x / 255 - mean) / std has one too.
"""

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trainlab import data
from trainlab.config import load_config
from trainlab.data.loader import epoch_seed, make_batches
from trainlab.optim import build_optimizer, step_optimizer
from trainlab.train import train

from conftest import FASHION, ROOT

U = 2.0 ** -24  # float32 unit roundoff: round-to-nearest is off by at most U * |result| (normal range)
TINY = 2.0 ** -149  # ... or by half the smallest subnormal, an absolute floor for results near 0
LR, MOMENTUM = 0.01, 0.9  # examples/seed_mlp.yaml's optimiser, which reference_loop writes out
OVERRIDES = ["data.limit=12000", "train.epochs=2", "train.progress=none"]  # 10,800 train: 2 x 169 steps


def reference_loop(x, y, epochs, seed=0, batch_size=64, fused=False, step=None):
    """The seed document's loop, made runnable on tensors: the yardstick, not trainlab code.

    fused picks torch.optim.SGD's update kernel as trainlab's optim.fused does: True passes
    fused=True; False passes nothing, torch's default, which on the CPU is the for-loop update
    (foreach is a CUDA default) exactly as trainlab's optim.fused=false leaves it.
    step(optimizer), if given, is called in place of optimizer.step() (it must call it).
    """
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
    optimizer = torch.optim.SGD(net.parameters(), lr=LR, momentum=MOMENTUM, **({"fused": True} if fused else {}))
    for epoch in range(1, epochs + 1):
        # The same example order trainlab draws (a randperm per epoch, seeded): only the loop differs.
        order = torch.randperm(len(y), generator=torch.Generator().manual_seed(epoch_seed(seed, epoch)))
        for i in range(0, len(y), batch_size):
            index = order[i:i + batch_size]
            optimizer.zero_grad()
            loss = F.cross_entropy(net(x[index]), y[index])
            loss.backward()
            optimizer.step() if step is None else step(optimizer)
    return net


@pytest.fixture(scope="module")
def seed_data():
    """(config, splits, the seed's normalisation, trainlab's model inputs for the training split)."""
    assert (FASHION / "train-images-idx3-ubyte.gz").is_file(), "Fashion-MNIST missing: run `make setup`"
    cfg = load_config(ROOT / "examples/seed_mlp.yaml", OVERRIDES)
    splits = data.load(cfg)
    mean, std = splits.mean[0], splits.std[0]
    normalise = lambda s: (s.x.float() / 255 - mean) / std  # noqa: E731  the seed's, in float32
    # The training split exactly as train() feeds it to the model: one in-order batch of it all.
    batches = make_batches(splits, "train", 64, torch.device("cpu"), torch.float32, cfg, train=True)
    inputs = torch.cat([x for x, _ in batches.for_eval(len(splits.train)).epoch()])
    return cfg, splits, normalise, inputs


def test_trainlab_inputs_are_the_seeds_normalisation_to_float32_rounding(seed_data):
    cfg, splits, normalise, inputs = seed_data
    mean, std = splits.mean[0], splits.std[0]
    exact = (splits.train.x.double() / 255 - mean) / std  # float64: exact to ~1e-16 here
    # Bound, per input, against the exact value (first order in U; the U^2 terms are < 1e-13):
    # trainlab computes x * c + d in float32 with c = fl(fl(1/fl(std)) * fl(1/255)), 4 roundings
    # (4U relative), and x * c one more (5U relative) of |x * c| <= 1/std = 2.83: 14.2U;
    # d = fl(-fl(mean) / fl(std)), 3U relative of 0.81: 2.4U; the final add U * |result| <= U * 2.02.
    # 18.6U in all -> 19U = 1.1e-6 (measured here: 3.6U).
    assert (inputs.double() - exact).abs().max().item() <= 19 * U
    # The seed's own (x / 255 - mean) / std: fl(x/255) (U of <= 1), - fl(mean) (U of 0.29 + U of
    # the difference, <= 0.71), both / std (x 2.83), then 2 roundings of U * 2.02: 9.7U -> 10U.
    assert (normalise(splits.train).double() - exact).abs().max().item() <= 10 * U


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "for_loop"])
def test_seed_mlp_matches_a_plain_pytorch_loop(tmp_path, seed_data, fused):
    cfg, splits, normalise, inputs = seed_data
    cfg = load_config(ROOT / "examples/seed_mlp.yaml", OVERRIDES + [f"optim.fused={str(fused).lower()}"])
    result = train(cfg, out=tmp_path / "run", splits=splits)

    # The seed's loop on trainlab's input bits (the test above bounds how far those are from the
    # seed's own normalisation), with the update kernel trainlab used.
    net = reference_loop(inputs, splits.train.y, epochs=2, fused=fused)
    # Bound 0: both sides do the same float32 operations on the same bits in the same order (the
    # same matmul shapes in one process and thread count), which is deterministic on any CPU.
    # Any difference means train() computed something the seed's loop does not.
    for ours, ref in zip(result.model.parameters(), net.parameters()):
        torch.testing.assert_close(ours, ref, rtol=0, atol=0)

    with torch.no_grad():
        ref_accuracy = (net(normalise(splits.test)).argmax(1) == splits.test.y).float().mean().item()
    # 2 examples of 10,000, a statistical margin. The weights are equal, so the accuracies differ
    # only through the test inputs (the seed's normalisation here, trainlab's in train(): within
    # 29U = 1.7e-6 of each other, bound above) and the evaluation batch size. That moved the logits
    # by 2.9e-6 when this was set, and flips a prediction only where the top two logits are that
    # close. The smallest top-two margin was 3.1e-4, 3 of 10,000 were under 1e-3: ~0.03 expected
    # flips per 1e-5 of logit change, so more than 2 on another CPU's (different) weights is remote.
    assert abs(result.metrics["test"]["accuracy"] - ref_accuracy) <= 2 / len(splits.test)


def test_fused_sgd_step_is_the_for_loop_step_to_rounding(seed_data):
    """trainlab's default update (optim.fused=true: torch's fused SGD kernel, called directly by
    step_optimizer) against torch.optim.SGD's for-loop update, on every step of the seed MLP's
    2-epoch run, each from the same weights, momentum buffers and gradients.

    Why per step and not the two runs' end weights: a pure worst-case bound on two trajectories is
    hopeless. One rounding difference per weight per step, fed back through the gradient, flips a
    ReLU whose pre-activation is within ~1e-7 of 0 (10,800 x 128 of them per epoch: some are),
    which changes that example's whole share of one step's gradient for a row of W1, up to
    lr / (1 - momentum) * |dL/dh| * |x| / 64 ~ 1e-3 in the weights: 5 orders of magnitude above
    an ulp. Measured with +-1 ulp of noise on every weight every step, three noise seeds moved the
    end weights by 6e-7, 2e-5 and 6e-3; the issue's AMD EPYC run moved them by 2.2e-5. From a
    common state the arithmetic gives a bound, on any CPU and for any fma contraction.
    """
    cfg, splits, _, inputs = seed_data
    twins, fused, steps = None, None, []

    def step_both(loop):
        nonlocal twins, fused
        params = loop.param_groups[0]["params"]
        if fused is None:  # trainlab's optimiser for the seed config on twin tensors
            twins = [torch.zeros_like(p, requires_grad=True) for p in params]
            fused = build_optimizer(cfg, twins)
            assert fused.param_groups[0]["fused"] and fused.param_groups[0]["lr"] == LR
        with torch.no_grad():
            b0 = [loop.state[p]["momentum_buffer"].clone() if p in loop.state else None for p in params]
            for q, p, b in zip(twins, params, b0):
                q.copy_(p)
                q.grad = p.grad.clone()
                if b is not None:
                    fused.state[q]["momentum_buffer"] = b.clone()
        loop.step()            # torch.optim.SGD's for-loop: buf.mul_(m).add_(g); p.add_(buf, alpha=-lr)
        step_optimizer(fused)  # trainlab's fused step from the same state
        for q, p, b in zip(twins, params, b0):
            b_loop, b_fused = loop.state[p]["momentum_buffer"], fused.state[q]["momentum_buffer"]
            # Momentum, b' = m * b + g: the loop rounds m * b, then the sum; the fused kernel does the
            # same or (fma contraction) rounds once. Each is within U * (m|b| + |b'|) of the exact
            # value (U^2 terms: the 1e-3), so they differ by at most twice that. First step: b' = g.
            m_b = MOMENTUM * b.abs() if b is not None else torch.zeros_like(b_loop)
            bound_b = 2 * U * (m_b + b_loop.abs()) * (1 + 1e-3) + 2 * TINY
            assert ((b_fused - b_loop).abs() <= bound_b).all()
            # Weights, p' = p - lr * b': the loop rounds once (fma; twice in a scalar tail), the
            # kernel once or twice (fl(lr * b') then the sum): each is within U * lr|b'| + U|p'|
            # of p - lr * b' for its own b', so they differ by at most lr|db'| plus both of those.
            # That is ~1 ulp of |p'|: 2U|p'| = 1.2e-7 * |p'|, |p'| <= 0.3 here.
            bound_p = (LR * (b_fused - b_loop).abs() + U * LR * (b_fused.abs() + b_loop.abs())
                       + U * (q.abs() + p.abs())) * (1 + 1e-3) + 2 * TINY
            assert ((q - p).abs() <= bound_p).all()
        steps.append(1)

    reference_loop(inputs, splits.train.y, epochs=2, step=step_both)
    assert len(steps) == 2 * 169  # every step of the run was compared
