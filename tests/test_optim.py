"""trainlab.optim.step_optimizer: bitwise torch.optim's step, on real data."""

import pytest
import torch
import torch.nn.functional as F

from trainlab import data
from trainlab.config import load_config
from trainlab.optim import step_optimizer

from conftest import ROOT


def _mlp(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _steps(model, optimizer, x, y, n, step) -> None:
    for i in range(n):
        index = torch.arange(i * 32, (i + 1) * 32) % len(y)
        F.cross_entropy(model(x[index]), y[index]).backward()
        step(optimizer)


@pytest.mark.parametrize("options", [
    {"momentum": 0.9}, {"momentum": 0.9, "nesterov": True, "weight_decay": 1e-3}, {"momentum": 0.0},
    {"momentum": 0.5, "dampening": 0.1}, {"momentum": 0.9, "maximize": True},
])
def test_step_optimizer_is_bitwise_torch_optim_fused_sgd(options):
    # scikit-learn's digits (8x8 images, real data), standardised.
    cfg = load_config(ROOT / "examples/wine_tabular.yaml", ["data.name=digits"])
    train = data.load(cfg).train
    x, y = train.x.float(), train.y
    ours, theirs = _mlp(0), _mlp(0)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.05, fused=True, **options)
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.05, fused=True, **options)

    def torch_step(optimizer):
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    through_torch = []
    torch_step_method = opt_ours.step
    opt_ours.step = lambda: through_torch.append(1) or torch_step_method()
    _steps(ours, opt_ours, x, y, 30, step_optimizer)
    assert through_torch == []  # all 30 steps, the first (momentum buffers created) too, called the kernel directly
    _steps(theirs, opt_theirs, x, y, 30, torch_step)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)
        assert a.grad is None
    state_ours, state_theirs = opt_ours.state_dict(), opt_theirs.state_dict()
    assert state_ours["param_groups"] == state_theirs["param_groups"]
    for key, value in state_theirs["state"].items():
        assert torch.equal(state_ours["state"][key]["momentum_buffer"], value["momentum_buffer"])


def test_step_optimizer_goes_through_torch_optim_where_hooks_or_other_optimisers_need_it():
    model = _mlp(0)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    calls = []
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    optimizer.register_step_post_hook(lambda opt, args, kwargs: calls.append(1))
    _steps(model, optimizer, x, y, 3, step_optimizer)
    assert len(calls) == 3  # every step ran torch.optim's step(), hooks included

    # Another optimiser: its own step(), the same weights as calling it directly.
    ours, theirs = _mlp(0), _mlp(0)
    adam_ours, adam_theirs = torch.optim.Adam(ours.parameters(), lr=0.01), torch.optim.Adam(theirs.parameters(), lr=0.01)
    _steps(ours, adam_ours, x, y, 3, step_optimizer)
    _steps(theirs, adam_theirs, x, y, 3, lambda o: (o.step(), o.zero_grad()))
    assert all(torch.equal(a, b) for a, b in zip(ours.parameters(), theirs.parameters()))


def test_a_scheduler_sees_the_first_step_without_a_warning(recwarn):
    model = _mlp(0)
    x, y = torch.randn(64, 64), torch.randint(0, 10, (64,))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, fused=True)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)

    def step_and_schedule(opt):
        step_optimizer(opt)
        scheduler.step()

    _steps(model, optimizer, x, y, 3, step_and_schedule)
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1 * 0.5 ** 3)  # exact halvings in float64
    assert not [w for w in recwarn if "lr_scheduler.step()" in str(w.message)]


def test_training_without_compile_never_imports_torch_dynamo(tmp_path):
    """torch._dynamo costs 1.2-1.7 s to import; an eager run (optimiser, schedule, checkpoints, resume)
    must not pull it in. Once something imports it, torch.optim's methods use dynamo's own wrapper."""
    import subprocess
    import sys
    code = f"""
import sys, torch, trainlab
from trainlab import checkpoint
cfg = dict(data=dict(name="digits"), model=dict(hidden=[16]), optim=dict(name="sgd", lr=0.05, momentum=0.9),
           schedule=dict(name="cosine", warmup_epochs=1), train=dict(epochs=2, progress="none", checkpoint_every=7))
trainlab.train(cfg, out=r"{tmp_path}/run")
state = checkpoint.load(r"{tmp_path}/run/checkpoints/last.pt")
opt = torch.optim.SGD(torch.nn.Linear(2, 2).parameters(), lr=0.1)
opt.load_state_dict(opt.state_dict()); opt.zero_grad()
assert "torch._dynamo" not in sys.modules, "imported torch._dynamo"
import torch._dynamo
fn = torch.optim.Optimizer.state_dict.__wrapped__
opt.state_dict()
assert getattr(fn, "__dynamo_disable").__module__.startswith("torch._dynamo"), getattr(fn, "__dynamo_disable")
print("ok")
"""
    proc = subprocess.run([sys.executable, "-W", "error::UserWarning", "-c", code], capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr
