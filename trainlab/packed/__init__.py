"""K configurations of one shape trained as one computation (packed training).

    results = train_packed([cfg_a, cfg_b, cfg_c], outs=["runs/a", "runs/b", "runs/c"])

Small models leave the hardware idle: a 784-128-10 MLP on a batch of 64 is a few hundred
microseconds of arithmetic and as much again of Python and kernel launches. Trials that share the
data, the MLP's shape and the batch size are trained together here: each Linear layer's
parameters are stacked on a leading K axis (`W: (K, out, in)`, `b: (K, out)`), the first layer is
one matrix product over all K members (`x (B, F) @ W (F, K*out)`: the shared batch is read once)
and the later ones batched matrix products (`torch.baddbmm`, `(K, B, in) @ (K, in, out)`).

Each member keeps what makes it its own trial:
- its optimiser: trainlab.optim.build_optimizer builds each member's torch.optim optimiser exactly
  as train() does (defaults resolve the same way; its schedule steps it). The update is then
  torch.optim's: with fused SGD (the default optim.fused=true) torch.optim's fused kernel called on
  the member's slices with the member's own scalars; otherwise StackedOptimizer, torch.optim's
  update rule on all members at once with (K, 1, ...) hyperparameter tensors (tested against
  torch.optim for every optimiser); `exact_step=True`, or members with different optimisers, step
  each member's own optimiser over parameters aliasing its slices (their `.grad` aliasing the
  slice of the stacked gradient). lr, momentum, weight decay, betas, alpha, eps and nesterov may
  all differ, even the optimiser;
- its schedule (trainlab.optim.build_scheduler on its own optimiser, stepped like train());
- its seed: its initial weights are build_model's after torch.manual_seed(seed), as in train();
  its dropout masks come from its own generator, a copy of the global one at that point (on the
  CPU the masks equal a separate run's); members with different seeds get their own example
  order (their batches are then gathered per member, `x: (K, B, F)`);
- its dropout rate, L1/L2 strengths, clip_grad_norm, epochs, early stopping, monitor and
  train.final.

A member that stops (its epochs done, early stopping, pruning through `on_epoch_end`, or a
NaN/inf loss) leaves the pack at the end of that epoch: the pack is rebuilt without it, the others
continue untouched. Every member gets the run directory train() would write (config.yaml,
metrics.jsonl, checkpoints/best.pt, summary.json) and the same `Result`. Differences from train():
no resumable last.pt (a search redoes an unfinished trial instead), a diverged member is returned
with summary["stopped_because"] == "diverged" instead of raising, and metrics rows carry
`pack_size` (members trained together in that epoch; `seconds` is the pack's wall time).

What packs: model.name=mlp without batch_norm, train.compile off, and on the CPU float32/float64
(bf16 autocast on CUDA packs too). `pack_key(cfg)` says which configs can share a pack.

Layout: key.py says which configs pack together, model.py is the stacked model and its members,
optimizer.py the stacked optimiser step and clipping, passes.py one pass over a split (batches,
losses, totals), loop.py train_packed and finish.py each member's final weights and run files.
"""

from .key import PER_MEMBER_KEYS, pack_key, packable
from .loop import train_packed
from .model import PackedMLP
from .optimizer import StackedOptimizer

__all__ = ["PER_MEMBER_KEYS", "PackedMLP", "StackedOptimizer", "pack_key", "packable", "train_packed"]
