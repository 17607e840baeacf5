"""benchmarks/step_floor.py records the products a step runs, and only those."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))

import step_floor  # noqa: E402


def test_recorder_sees_each_product_of_a_step_and_replays_them():
    """A trained layer, then a frozen one, as an adapter under a frozen head. Forward: two
    products. Backward: the frozen layer's input gradient and the trained weight's gradient, and
    no product for the frozen weight's gradient (it is never formed)."""
    torch.manual_seed(0)
    trained, frozen = torch.nn.Linear(6, 5), torch.nn.Linear(5, 3, bias=False)
    frozen.weight.requires_grad_(False)
    x = torch.randn(4, 6)
    rec = step_floor.Recorder()
    with rec:
        frozen(torch.relu(trained(x))).sum().backward()
    names = [f.__name__ for f, _, _ in rec.calls]
    assert names == ["addmm.default", "mm.default", "mm.default", "mm.default"]
    shapes = [tuple(a[1] for a in args if a[0] == "T") for _, args, _ in rec.calls]
    assert shapes[0] == ((5,), (4, 6), (6, 5))  # b + x @ W^T
    assert shapes[1] == ((4, 5), (5, 3))  # h @ W_frozen^T
    assert sorted(shapes[2:]) == sorted([((4, 3), (3, 5)), ((5, 4), (4, 6))])  # grad of h; grad of W
    seconds, split = step_floor.replay_time(rec.calls, reps=2)
    assert seconds > 0 and set(split) == {"mm", "addmm"}
    # the replay keeps each argument's layout, transposed views included
    layouts = [a for _, args, _ in rec.calls for a in args if a[0] == "T"]
    assert any(a[2] != torch.empty(a[1]).stride() for a in layouts)
