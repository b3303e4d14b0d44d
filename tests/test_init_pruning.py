"""Pruning at initialisation (lth.init_pruning): exact expectations on tiny hand-checkable networks.

The derivatives (SNIP's loss gradient, GraSP's Hessian-gradient product, SynFlow's flow gradient)
are checked against references computed independently (closed forms, torch.func /
torch.autograd.functional on float64 networks); the schedule, ``prune_to`` and the ablations
against hand-computed masks and counts.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

import lth.init_pruning.prune as prune_module
from lth.criteria import NEEDS_DERIVATIVE, compute_scores
from lth.errors import LthError
from lth.init_pruning import (
    ablate_mask,
    criterion_derivatives,
    flow_gradient,
    hessian_gradient,
    invert_mask,
    keep_fractions,
    loss_gradient,
    prune_at_init,
    reinit_weights,
    schedule_counts,
    shuffle_mask,
)
from lth.init_pruning.derivatives import GRASP_TEMPERATURE
from lth.masks import Mask
from lth.pruning import prune_to

METHODS = ["snip", "grasp", "synflow", "magnitude", "random"]


# --------------------------------------------------------------------------- helpers


def _mlp(seed: int = 0) -> nn.Sequential:
    """3 -> 4 -> 3, tanh, float64, with biases (no randomness in the forward pass)."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 3)).double()


def _batches(seed: int = 1, n_in: int = 3) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        (torch.randn(5, n_in, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])),
        (torch.randn(4, n_in, generator=g, dtype=torch.float64), torch.tensor([2, 2, 0, 1])),
    ]


def _mean_loss(model: nn.Module, names: list[str], batches, temperature: float = 1.0):
    """w (the ``names`` parameters, as a tuple) -> mean over batches of cross_entropy(f_w(x) / T, y);
    the other parameters held at their values."""
    fixed = {n: p.detach().clone() for n, p in model.named_parameters()}

    def f(*ws):
        params = dict(fixed)
        params.update(zip(names, ws))
        total = sum(F.cross_entropy(functional_call(model, params, (x,)) / temperature, y) for x, y in batches)
        return total / len(batches)

    return f


def _reference_grad(model, names, batches, temperature=1.0) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    f = _mean_loss(model, names, batches, temperature)
    grads = torch.func.grad(f, argnums=tuple(range(len(names))))(*(params[n].detach() for n in names))
    return dict(zip(names, grads))


def _reference_hvp(model, names, batches, temperature=GRASP_TEMPERATURE) -> dict[str, torch.Tensor]:
    """H g with torch.autograd.functional.hvp, g the gradient of the same tempered mean loss."""
    params = dict(model.named_parameters())
    inputs = tuple(params[n].detach().clone() for n in names)
    f = _mean_loss(model, names, batches, temperature)
    g = _reference_grad(model, names, batches, temperature)
    _, hv = torch.autograd.functional.hvp(f, inputs, tuple(g[n] for n in names))
    return dict(zip(names, hv))


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _assert_state_equal(before: dict[str, torch.Tensor], model: nn.Module) -> None:
    after = model.state_dict()
    assert set(before) == set(after)
    for k, v in before.items():
        assert after[k].dtype == v.dtype, k
        assert torch.equal(after[k], v), k


def _conv_bn_net() -> nn.Sequential:
    torch.manual_seed(3)
    net = nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(4, 3),
    )
    # Non-trivial running statistics, so that "unchanged" means something.
    with torch.no_grad():
        net[1].running_mean.copy_(torch.tensor([0.1, -0.2, 0.3, 0.05]))
        net[1].running_var.copy_(torch.tensor([1.5, 0.7, 2.0, 1.1]))
        net[1].num_batches_tracked.fill_(7)
        net[1].weight.copy_(torch.tensor([1.2, -0.8, 0.5, 1.0]))
        net[1].bias.copy_(torch.tensor([0.3, -0.1, 0.2, 0.0]))
    return net


def _conv_batches():
    g = torch.Generator().manual_seed(5)
    return [
        (torch.randn(4, 3, 6, 6, generator=g), torch.tensor([0, 1, 2, 0])),
        (torch.randn(4, 3, 6, 6, generator=g), torch.tensor([1, 1, 2, 0])),
    ]


# --------------------------------------------------------------------------- 1. loss gradient / snip


def test_loss_gradient_matches_closed_form_single_linear_layer():
    """logits = W x: dCE/dW = mean over samples of (softmax(Wx) - onehot(y)) x^T, then over batches."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3, bias=False)).double()
    batches = _batches()
    W = model[0].weight.detach()
    expected = torch.zeros_like(W)
    for x, y in batches:
        p = torch.softmax(x @ W.T, dim=1)
        expected += ((p - F.one_hot(y, 3).double()).T @ x) / len(y)
    expected /= len(batches)
    got = loss_gradient(model, ["0.weight"], batches)
    assert set(got) == {"0.weight"}
    torch.testing.assert_close(got["0.weight"], expected, rtol=1e-12, atol=1e-14)


def test_loss_gradient_matches_torch_func_and_snip_is_abs_w_times_g():
    model = _mlp()
    batches = _batches()
    names = ["0.weight", "2.weight", "2.bias"]
    before = _snapshot(model)
    got = loss_gradient(model, names, batches)
    ref = _reference_grad(model, names, batches)
    assert list(got) == names
    for n in names:
        assert got[n].dtype == torch.float64
        torch.testing.assert_close(got[n], ref[n], rtol=1e-12, atol=1e-14)
    # a single batch differs from the mean of two: the averaging is real
    one = loss_gradient(model, names, batches[:1])
    assert not torch.allclose(one["0.weight"], got["0.weight"])
    _assert_state_equal(before, model)
    for p in model.parameters():
        assert p.grad is None

    params = dict(model.named_parameters())
    w = {n: params[n].detach() for n in ["0.weight", "2.weight"]}
    mask = {n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()}
    assert NEEDS_DERIVATIVE["snip"] == "grad"
    scores = compute_scores("snip", w, w, mask, torch.Generator().manual_seed(0), derivatives={"grad": got})
    for n in w:
        torch.testing.assert_close(scores[n], (w[n] * ref[n]).abs().float())
    # criterion_derivatives gives the same gradient
    via = criterion_derivatives("snip", model, list(w), batches)
    assert set(via) == {"grad"}
    for n in w:
        torch.testing.assert_close(via["grad"][n], ref[n], rtol=1e-12, atol=1e-14)


# --------------------------------------------------------------------------- 2. Hessian-gradient / grasp


def test_hessian_gradient_matches_closed_form_single_linear_layer():
    """logits = W x / T: H[V] = mean of (1/T^2) (diag(p) - p p^T) (V x) x^T, at V = g."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 3, bias=False)).double()
    batches = _batches()
    W = model[0].weight.detach()
    T = 2.0
    g = torch.zeros_like(W)
    for x, y in batches:
        p = torch.softmax(x @ W.T / T, dim=1)
        g += ((p - F.one_hot(y, 3).double()).T @ x) / (T * len(y))
    g /= len(batches)
    hg = torch.zeros_like(W)
    for x, _ in batches:
        p = torch.softmax(x @ W.T / T, dim=1)
        for i in range(len(x)):
            jac = torch.diag(p[i]) - torch.outer(p[i], p[i])
            hg += torch.outer(jac @ (g @ x[i]), x[i]) / (T * T * len(x))
    hg /= len(batches)
    got = hessian_gradient(model, ["0.weight"], batches, temperature=T)
    torch.testing.assert_close(got["0.weight"], hg, rtol=1e-10, atol=1e-16)


@pytest.mark.parametrize("names", [["0.weight"], ["0.weight", "2.weight"]])
def test_hessian_gradient_matches_autograd_hvp(names):
    model = _mlp()
    batches = _batches()
    before = _snapshot(model)
    got = hessian_gradient(model, names, batches)
    ref = _reference_hvp(model, names, batches, GRASP_TEMPERATURE)
    assert list(got) == names
    for n in names:
        assert float(ref[n].abs().max()) > 0
        torch.testing.assert_close(got[n], ref[n], rtol=1e-9, atol=1e-15)
    _assert_state_equal(before, model)
    # the default temperature is GraSP's 200: T = 1 gives another answer
    other = hessian_gradient(model, names, batches, temperature=1.0)
    torch.testing.assert_close(
        other[names[0]], _reference_hvp(model, names, batches, 1.0)[names[0]], rtol=1e-9, atol=1e-15
    )
    assert not torch.allclose(other[names[0]], got[names[0]])


def test_hessian_gradient_holds_other_parameters_fixed():
    """With one name, H g is the block H_11 g_1 (not the block of the joint product)."""
    model = _mlp()
    batches = _batches()
    alone = hessian_gradient(model, ["0.weight"], batches)["0.weight"]
    joint = hessian_gradient(model, ["0.weight", "2.weight"], batches)["0.weight"]
    assert not torch.allclose(alone, joint, rtol=1e-3, atol=0)


def test_grasp_criterion_is_w_times_hg_and_prune_at_init_keeps_highest():
    model = _mlp()
    batches = _batches()
    names = ["0.weight", "2.weight"]
    params = dict(model.named_parameters())
    w = {n: params[n].detach().clone() for n in names}
    hg = _reference_hvp(model, names, batches, GRASP_TEMPERATURE)

    derivatives = criterion_derivatives("grasp", model, names, batches)
    assert set(derivatives) == {"hessian_grad"}
    mask = {n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()}
    scores = compute_scores("grasp", w, w, mask, torch.Generator().manual_seed(0), derivatives=derivatives)
    for n in names:
        torch.testing.assert_close(scores[n], (w[n] * hg[n]).float())

    # prune_at_init keeps the highest w*Hg = removes the highest paper score S = -w*Hg
    flat = torch.cat([(w[n] * hg[n]).flatten() for n in names])
    total = flat.numel()
    assert total == 24
    keep = 0.375
    k = round(total * keep)
    assert k == 9
    ordered = flat.sort(descending=True).values
    gap = float(ordered[k - 1] - ordered[k])
    assert gap > 1e-4 * float(ordered.abs().max())  # no tie (even in float32) at the threshold
    expected_flat = torch.zeros(total, dtype=torch.bool)
    expected_flat[torch.argsort(flat, descending=True)[:k]] = True
    removed_flat = torch.zeros(total, dtype=torch.bool)
    removed_flat[torch.argsort(-flat, descending=True)[: total - k]] = True
    assert torch.equal(removed_flat, ~expected_flat)

    result = prune_at_init(model, "grasp", keep, batches=batches)
    assert list(result.mask) == names
    got_flat = torch.cat([result.mask[n].flatten() for n in names])
    assert torch.equal(got_flat, expected_flat)
    assert result.kept_per_iteration == [k]
    for n in names:
        torch.testing.assert_close(result.first_scores[n], (w[n] * hg[n]).float())


# --------------------------------------------------------------------------- 3. SynFlow closed form


def _two_layer(bias: bool) -> nn.Sequential:
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(3, 4, bias=bias), nn.Linear(4, 2, bias=bias)).double()
    if bias:
        with torch.no_grad():
            net[0].bias.copy_(torch.tensor([5.0, -3.0, 2.0, 7.0]))
            net[1].bias.copy_(torch.tensor([-4.0, 9.0]))
    return net


@pytest.mark.parametrize("bias", [False, True])
def test_synflow_closed_form_two_linear_layers(bias):
    model = _two_layer(bias)
    before = _snapshot(model)
    W1, W2 = model[0].weight.detach().clone(), model[1].weight.detach().clone()
    assert bool((W1 < 0).any()) and bool((W2 < 0).any())  # the absolute values matter
    expected1 = W1.abs() * W2.abs().sum(dim=0)[:, None]  # |W1[i,j]| * sum_k |W2[k,i]|
    expected2 = W2.abs() * W1.abs().sum(dim=1)[None, :]  # |W2[k,i]| * sum_j |W1[i,j]|

    names = ["0.weight", "1.weight"]
    fg = flow_gradient(model, names, (3,))
    assert fg["0.weight"].dtype == torch.float64
    torch.testing.assert_close(fg["0.weight"] * W1.abs(), expected1, rtol=1e-14, atol=0)
    torch.testing.assert_close(fg["1.weight"] * W2.abs(), expected2, rtol=1e-14, atol=0)
    _assert_state_equal(before, model)

    w = {"0.weight": W1, "1.weight": W2}
    mask = {n: torch.ones_like(t, dtype=torch.bool) for n, t in w.items()}
    scores = compute_scores("synflow", w, w, mask, torch.Generator().manual_seed(0), derivatives={"flow_grad": fg})
    torch.testing.assert_close(scores["0.weight"], expected1.float())
    torch.testing.assert_close(scores["1.weight"], expected2.float())
    # criterion_derivatives reads the input shape from the first batch
    via = criterion_derivatives(
        "synflow", model, names, batches=[(torch.randn(2, 3, dtype=torch.float64), torch.tensor([0, 1]))]
    )
    torch.testing.assert_close(via["flow_grad"]["0.weight"], fg["0.weight"], rtol=0, atol=0)


def test_synflow_closed_form_three_layers_relu_biases():
    """|W3| |W2| |W1| 1 (ReLU is the identity on the positive flow, biases are zeroed):
    score(W2[i,j]) = |W2[i,j]| * (1^T |W3|)[i] * (|W1| 1)[j]."""
    torch.manual_seed(4)
    model = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    with torch.no_grad():
        for m in (model[0], model[2], model[4]):
            m.bias.fill_(-10.0)  # would kill every ReLU if it were not set to 0
    A1, A2, A3 = (model[i].weight.detach().abs() for i in (0, 2, 4))
    names = ["0.weight", "2.weight", "4.weight"]
    fg = flow_gradient(model, names, (3,))
    ones_in = torch.ones(3, dtype=torch.float64)
    ones_out = torch.ones(2, dtype=torch.float64)
    exp1 = A1 * ((ones_out @ A3 @ A2)[:, None] * ones_in[None, :])
    exp2 = A2 * torch.outer(ones_out @ A3, A1 @ ones_in)
    exp3 = A3 * torch.outer(ones_out, A2 @ A1 @ ones_in)
    for name, a, e in zip(names, (A1, A2, A3), (exp1, exp2, exp3)):
        torch.testing.assert_close(fg[name] * a, e, rtol=1e-13, atol=0)


# --------------------------------------------------------------------------- 4. data independence, model untouched


def test_synflow_is_data_independent():
    model = _mlp()
    a = _batches(seed=11)
    b = [(x * 100 + 3, (y + 1) % 3) for x, y in _batches(seed=12)]
    ra = prune_at_init(model, "synflow", 0.3, batches=a, iterations=10)
    rb = prune_at_init(model, "synflow", 0.3, batches=b, iterations=10)
    rc = prune_at_init(model, "synflow", 0.3, input_shape=(3,), iterations=10)
    for other in (rb, rc):
        assert list(other.mask) == list(ra.mask)
        for n in ra.mask:
            assert torch.equal(other.mask[n], ra.mask[n])
        assert other.kept_per_iteration == ra.kept_per_iteration
    # snip, by contrast, depends on the data (so the comparison above can tell)
    sa = prune_at_init(model, "snip", 0.3, batches=a)
    sb = prune_at_init(model, "snip", 0.3, batches=b)
    assert any(not torch.equal(sa.mask[n], sb.mask[n]) for n in sa.mask)


def test_synflow_without_data_or_input_shape_is_an_error():
    with pytest.raises(LthError, match="input shape"):
        prune_at_init(_mlp(), "synflow", 0.5, iterations=1)


@pytest.mark.parametrize("method", METHODS)
def test_prune_at_init_leaves_model_and_global_rng_untouched(method):
    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(3, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Dropout(0.3), nn.Linear(6, 3))
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    model.train()
    model[0].bias.requires_grad_(False)
    requires = [p.requires_grad for p in model.parameters()]
    batches = [(x.float(), y) for x, y in _batches(seed=13)]
    before = _snapshot(model)
    rng = torch.random.get_rng_state()
    result = prune_at_init(model, method, 0.4, batches=batches, iterations=3)
    assert torch.equal(torch.random.get_rng_state(), rng)
    _assert_state_equal(before, model)
    assert model.training and all(m.training for m in model.modules())
    assert [p.requires_grad for p in model.parameters()] == requires
    assert all(p.grad is None for p in model.parameters())
    total = 3 * 6 + 6 * 3
    assert result.mask.kept() == round(total * 0.4)
    # same seed, same mask (dropout in the scratch copy is seeded)
    again = prune_at_init(model, method, 0.4, batches=batches, iterations=3)
    for n in result.mask:
        assert torch.equal(again.mask[n], result.mask[n])


# --------------------------------------------------------------------------- 5. iterative schedule


def _wide() -> nn.Sequential:
    torch.manual_seed(8)
    return nn.Sequential(nn.Linear(7, 9), nn.ReLU(), nn.Linear(9, 5), nn.ReLU(), nn.Linear(5, 3))


def test_keep_fractions_and_global_schedule_counts():
    fractions = keep_fractions(0.1, 5)
    assert len(fractions) == 5
    assert fractions[-1] == 0.1
    for i, f in enumerate(fractions, start=1):
        assert f == pytest.approx(0.1 ** (i / 5), rel=1e-15)
    for keep, n in [(0.3, 7), (0.01, 100), (0.05, 3), (1.0, 4)]:
        assert keep_fractions(keep, n)[-1] == keep
    assert keep_fractions(0.2, 1) == [0.2]
    sizes = {"a": 63, "b": 45, "c": 15}
    assert schedule_counts(sizes, 0.1, 5, "global") == [round(123 * 0.1 ** (i / 5)) for i in range(1, 6)]
    assert schedule_counts(sizes, 0.1, 5, "global") == [78, 49, 31, 19, 12]  # 123 * 0.1**0.8 = 19.49
    assert schedule_counts(sizes, 0.1, 5, "layerwise") == [
        {n: round(s * 0.1 ** (i / 5)) for n, s in sizes.items()} for i in range(1, 6)
    ]


@pytest.mark.parametrize("method", ["magnitude", "synflow", "random"])
def test_iterative_global_schedule_exact_counts(method):
    model = _wide()
    total = 7 * 9 + 9 * 5 + 5 * 3
    result = prune_at_init(model, method, 0.1, iterations=5, input_shape=(7,))
    assert result.iterations == 5
    assert result.kept_per_iteration == [round(total * 0.1 ** (i / 5)) for i in range(1, 6)]
    assert result.mask.kept() == round(total * 0.1) == 12


def test_iterative_layerwise_schedule_exact_counts():
    model = _wide()
    sizes = {"0.weight": 63, "2.weight": 45, "4.weight": 15}
    per_iteration = schedule_counts(sizes, 0.1, 5, "layerwise")
    assert per_iteration == [{n: round(s * 0.1 ** (i / 5)) for n, s in sizes.items()} for i in range(1, 6)]
    for method in ("magnitude", "synflow"):
        result = prune_at_init(model, method, 0.1, scope="layerwise", iterations=5, input_shape=(7,))
        assert result.scope == "layerwise"
        assert result.kept_per_iteration == [sum(c.values()) for c in per_iteration]
        assert {n: int(m.sum()) for n, m in result.mask.items()} == {n: round(s * 0.1) for n, s in sizes.items()}
        assert {n: int(m.sum()) for n, m in result.mask.items()} == per_iteration[-1]


def test_iterative_magnitude_equals_one_shot_and_is_exact():
    model = _wide()
    params = dict(model.named_parameters())
    names = ["0.weight", "2.weight", "4.weight"]
    flat = torch.cat([params[n].detach().abs().flatten() for n in names])
    k = round(flat.numel() * 0.1)
    expected_flat = torch.zeros(flat.numel(), dtype=torch.bool)
    expected_flat[torch.argsort(flat, descending=True)[:k]] = True
    one = prune_at_init(model, "magnitude", 0.1, iterations=1)
    many = prune_at_init(model, "magnitude", 0.1, iterations=5)
    for r in (one, many):
        assert torch.equal(torch.cat([r.mask[n].flatten() for n in names]), expected_flat)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("method", ["random", "synflow"])
def test_iterative_pruned_weights_never_come_back(monkeypatch, method, scope):
    """Record the mask after every iteration (through prune_to): each is a subset of the one before
    and holds the scheduled count, even when the scores are redrawn each time (random)."""
    seen: list[tuple[Mask, Mask, object]] = []
    real = prune_module.prune_to

    def recording(scores, mask, counts, generator):
        new = real(scores, mask, counts, generator)
        seen.append((Mask({n: m.clone() for n, m in mask.items()}), new, counts))
        return new

    monkeypatch.setattr(prune_module, "prune_to", recording)
    model = _wide()
    result = prune_at_init(model, method, 0.1, scope=scope, iterations=5, input_shape=(7,))
    assert len(seen) == 5
    sizes = {"0.weight": 63, "2.weight": 45, "4.weight": 15}
    schedule = schedule_counts(sizes, 0.1, 5, scope)
    previous = Mask.ones({n: torch.zeros(s) for n, s in sizes.items()})
    for (given, new, counts), target in zip(seen, schedule):
        assert counts == target
        for n in sizes:
            assert torch.equal(given[n].flatten(), previous[n].flatten())  # rescored from the last mask
            assert not bool((new[n] & ~given[n]).any())  # nothing comes back
        if scope == "global":
            assert new.kept() == target
        else:
            assert {n: int(m.sum()) for n, m in new.items()} == target
        previous = new
    for n in sizes:
        assert torch.equal(result.mask[n], seen[-1][1][n])


# --------------------------------------------------------------------------- 6. prune_to by hand


def _scores_and_mask():
    scores = {"a": torch.tensor([[0.1, 0.9], [0.5, 0.3]]), "b": torch.tensor([0.7, 0.2, 0.8])}
    mask = Mask({"a": torch.tensor([[True, False], [True, True]]), "b": torch.tensor([True, False, True])})
    return scores, mask


def test_prune_to_global_hand_computed():
    scores, mask = _scores_and_mask()
    original = {n: m.clone() for n, m in mask.items()}
    g = torch.Generator().manual_seed(0)
    # kept: a -> 0.1, 0.5, 0.3; b -> 0.7, 0.8 (a[0,1] = 0.9 and b[1] are already pruned)
    new = prune_to(scores, mask, 3, g)
    assert torch.equal(new["a"], torch.tensor([[False, False], [True, False]]))
    assert torch.equal(new["b"], torch.tensor([True, False, True]))
    new = prune_to(scores, mask, 1, g)
    assert torch.equal(new["a"], torch.zeros(2, 2, dtype=torch.bool))
    assert torch.equal(new["b"], torch.tensor([False, False, True]))
    new = prune_to(scores, mask, 0, g)
    assert new.kept() == 0
    for count in (5, 6, 100):  # at or above what is kept: everything kept stays, nothing comes back
        new = prune_to(scores, mask, count, g)
        for n in mask:
            assert torch.equal(new[n], original[n])
    for n in mask:  # the input mask is not modified
        assert torch.equal(mask[n], original[n])


def test_prune_to_per_tensor_hand_computed():
    scores, mask = _scores_and_mask()
    g = torch.Generator().manual_seed(0)
    new = prune_to(scores, mask, {"a": 2, "b": 1}, g)
    assert torch.equal(new["a"], torch.tensor([[False, False], [True, True]]))
    assert torch.equal(new["b"], torch.tensor([False, False, True]))
    new = prune_to(scores, mask, {"a": 1, "b": 0}, g)
    assert torch.equal(new["a"], torch.tensor([[False, False], [True, False]]))
    assert torch.equal(new["b"], torch.zeros(3, dtype=torch.bool))
    new = prune_to(scores, mask, {"a": 4, "b": 3}, g)  # above what is kept: the 0.9 stays pruned
    assert torch.equal(new["a"], mask["a"])
    assert torch.equal(new["b"], mask["b"])


# --------------------------------------------------------------------------- 7. ablations


def _ablation_mask() -> Mask:
    a = torch.zeros(20, dtype=torch.bool)
    a[[0, 1, 2, 3, 4]] = True
    b = torch.zeros(2, 5, dtype=torch.bool)
    b[0, :3] = True
    return Mask({"a": a, "b": b})


def test_shuffle_mask_keeps_counts_moves_positions_and_is_seeded():
    mask = _ablation_mask()
    s1 = shuffle_mask(mask, torch.Generator().manual_seed(0))
    s2 = shuffle_mask(mask, torch.Generator().manual_seed(0))
    s3 = shuffle_mask(mask, torch.Generator().manual_seed(1))
    assert list(s1) == ["a", "b"]
    for n in mask:
        assert s1[n].shape == mask[n].shape and s1[n].dtype == torch.bool
        assert int(s1[n].sum()) == int(mask[n].sum())
        assert int(s3[n].sum()) == int(mask[n].sum())
        assert torch.equal(s1[n], s2[n])
    assert not torch.equal(s1["a"], mask["a"])
    assert not torch.equal(s1["b"], mask["b"])
    assert any(not torch.equal(s1[n], s3[n]) for n in mask)
    assert torch.equal(mask["a"][:5], torch.ones(5, dtype=torch.bool))  # input untouched


def test_invert_mask_keeps_counts_and_lowest_scores():
    mask = Mask(
        {"a": torch.tensor([True, False, True, False, False]), "b": torch.tensor([[True, True], [True, False]])}
    )
    scores = {"a": torch.tensor([0.5, 0.1, 0.9, 0.3, 0.7]), "b": torch.tensor([[4.0, 1.0], [3.0, 2.0]])}
    inv = invert_mask(mask, scores, torch.Generator().manual_seed(0))
    assert torch.equal(inv["a"], torch.tensor([False, True, False, True, False]))
    assert torch.equal(inv["b"], torch.tensor([[False, True], [True, True]]))
    assert {n: int(m.sum()) for n, m in inv.items()} == {"a": 2, "b": 3}


def test_reinit_weights_changes_only_kept_entries_of_masked_tensors():
    weights = {"w": torch.arange(6.0).view(2, 3), "u": torch.tensor([1.0, 2.0]), "v": torch.tensor([9.0, 8.0])}
    fresh = {"w": -torch.arange(6.0).view(2, 3) - 10, "u": torch.tensor([-1.0, -2.0]), "v": torch.tensor([0.5, 0.25])}
    mask = {"w": torch.tensor([[True, False, True], [False, False, True]]), "v": torch.tensor([False, False])}
    copy_w = weights["w"].clone()
    out = reinit_weights(weights, fresh, mask)
    assert torch.equal(out["w"], torch.tensor([[-10.0, 1.0, -12.0], [3.0, 4.0, -15.0]]))
    assert torch.equal(out["u"], weights["u"])  # unmasked
    assert torch.equal(out["v"], weights["v"])  # masked, all pruned
    assert torch.equal(weights["w"], copy_w)  # the input is not modified


def test_ablate_mask_dispatch_and_unknown():
    mask = _ablation_mask()
    scores = {"a": torch.arange(20.0), "b": torch.arange(10.0).view(2, 5)}
    for name in ("none", "reinit"):
        out = ablate_mask(name, mask, scores, torch.Generator().manual_seed(0))
        assert list(out) == list(mask)
        for n in mask:
            assert torch.equal(out[n], mask[n])
            assert out[n] is not mask[n]
    shuffled = ablate_mask("shuffle", mask, scores, torch.Generator().manual_seed(3))
    expected = shuffle_mask(mask, torch.Generator().manual_seed(3))
    for n in mask:
        assert torch.equal(shuffled[n], expected[n])
    inverted = ablate_mask("invert", mask, scores, torch.Generator().manual_seed(3))
    expected_a = torch.zeros(20, dtype=torch.bool)
    expected_a[:5] = True  # the 5 lowest of arange(20): here the same positions as the mask
    assert torch.equal(inverted["a"], expected_a)
    assert torch.equal(inverted["b"], torch.tensor([[True, True, True, False, False], [False] * 5]))
    with pytest.raises(LthError, match="'bogus'"):
        ablate_mask("bogus", mask, scores, torch.Generator().manual_seed(0))


# --------------------------------------------------------------------------- 8. bad input


@pytest.mark.parametrize(
    "keep, shown", [(0, "0"), (0.0, "0.0"), (1.5, "1.5"), (-0.1, "-0.1"), (float("nan"), "nan"), (True, "True")]
)
def test_bad_keep(keep, shown):
    with pytest.raises(LthError, match="keep") as info:
        prune_at_init(_mlp(), "magnitude", keep)
    assert shown in str(info.value)


@pytest.mark.parametrize("iterations", [0, -2])
def test_bad_iterations(iterations):
    with pytest.raises(LthError, match="iterations") as info:
        prune_at_init(_mlp(), "magnitude", 0.5, iterations=iterations)
    assert f"got {iterations}" in str(info.value)


def test_unknown_method_lists_the_known_ones():
    with pytest.raises(LthError) as info:
        prune_at_init(_mlp(), "obd", 0.5)
    message = str(info.value)
    assert "'obd'" in message
    for m in METHODS:
        assert m in message


def test_unknown_scope():
    with pytest.raises(LthError, match="'per-layer'"):
        prune_at_init(_mlp(), "magnitude", 0.5, scope="per-layer")


@pytest.mark.parametrize("method", ["snip", "grasp"])
@pytest.mark.parametrize("batches", [None, []])
def test_data_methods_need_batches(method, batches):
    with pytest.raises(LthError, match=f"'{method}'"):
        prune_at_init(_mlp(), method, 0.5, batches=batches)


def test_derivatives_without_batches_raise():
    with pytest.raises(LthError, match="training data"):
        loss_gradient(_mlp(), ["0.weight"], None)
    with pytest.raises(LthError, match="grasp"):
        hessian_gradient(_mlp(), ["0.weight"], [])
    with pytest.raises(LthError, match="'nope.weight'"):
        loss_gradient(_mlp(), ["nope.weight"], _batches())


def test_no_prunable_layers():
    with pytest.raises(LthError, match="prunable layers"):
        prune_at_init(nn.Sequential(nn.Flatten(), nn.ReLU()), "magnitude", 0.5)


# --------------------------------------------------------------------------- 9. layer collapse, summary


def test_layer_collapse_is_named_and_warned(capsys):
    torch.manual_seed(9)
    model = nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 4))
    with torch.no_grad():
        model[2].weight.mul_(1e-3)
        assert float(model[2].weight.abs().max()) < float(model[0].weight.abs().min())
    total = 48 + 32
    result = prune_at_init(model, "magnitude", 0.25)  # 20 kept < 48: all in the first layer
    assert result.collapsed() == ["2.weight"]
    assert result.mask.kept() == 20
    assert int(result.mask["0.weight"].sum()) == 20
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line]
    assert len(lines) == 1
    assert lines[0].startswith("lth: warning:")
    assert "2.weight" in lines[0] and "0.weight" not in lines[0]

    summary = result.summary()
    assert set(summary) == {
        "method",
        "keep",
        "scope",
        "iterations",
        "kept",
        "total",
        "density",
        "kept_per_iteration",
        "layers",
        "collapsed",
    }
    assert summary == {
        "method": "magnitude",
        "keep": 0.25,
        "scope": "global",
        "iterations": 1,
        "kept": 20,
        "total": total,
        "density": 20 / total,
        "kept_per_iteration": [20],
        "layers": {"0.weight": 20 / 48, "2.weight": 0.0},
        "collapsed": ["2.weight"],
    }

    quiet = prune_at_init(model, "magnitude", 0.25, warn_collapsed=False)
    assert quiet.collapsed() == ["2.weight"]
    assert capsys.readouterr().err == ""
    fine = prune_at_init(model, "magnitude", 0.25, scope="layerwise")
    assert fine.collapsed() == []
    assert capsys.readouterr().err == ""


# --------------------------------------------------------------------------- 10. conv + batchnorm


@pytest.mark.parametrize("method", METHODS)
def test_conv_batchnorm_every_method(method):
    model = _conv_bn_net()
    model.train()
    before = _snapshot(model)
    batches = _conv_batches()
    total = 4 * 3 * 3 * 3 + 3 * 4
    keep = 0.2
    iterations = 20 if method == "synflow" else None
    result = prune_at_init(model, method, keep, batches=batches, iterations=iterations)
    assert list(result.mask) == ["0.weight", "5.weight"]
    assert result.mask["0.weight"].shape == (4, 3, 3, 3)
    assert result.mask.size() == total
    assert result.mask.kept() == round(total * keep) == 24
    assert result.kept_per_iteration[-1] == 24
    assert len(result.kept_per_iteration) == (20 if method == "synflow" else 1)
    _assert_state_equal(before, model)  # running stats (and num_batches_tracked) unchanged
    assert model.training
    for s in result.first_scores.values():
        assert bool(torch.isfinite(s).all())


def test_synflow_default_iterations_conv_batchnorm():
    model = _conv_bn_net()
    before = _snapshot(model)
    result = prune_at_init(model, "synflow", 0.1, input_shape=(3, 6, 6))
    assert result.iterations == 100
    total = 4 * 3 * 3 * 3 + 3 * 4
    assert result.kept_per_iteration == [round(total * (0.1 if i == 100 else 0.1 ** (i / 100))) for i in range(1, 101)]
    assert result.mask.kept() == round(total * 0.1)
    _assert_state_equal(before, model)


def test_synflow_batchnorm_uses_abs_gamma_zero_shift_and_mean():
    """Conv(no bias) -> BN (eval, running mean 0, shift 0, |gamma|, running var kept) -> sum:
    R = sum_c |gamma_c| / sqrt(var_c + eps) * sum_{positions} conv_|W|(ones)_c, so
    dR/d|W[c,...]| = |gamma_c| / sqrt(var_c + eps) * (number of output positions)."""
    full = _conv_bn_net()
    net = nn.Sequential(full[0], full[1])
    net[0].bias = None
    fg = flow_gradient(net, ["0.weight"], (3, 6, 6))["0.weight"]
    bn = net[1]
    per_channel = bn.weight.detach().abs() / torch.sqrt(bn.running_var + bn.eps) * 16
    expected = per_channel.view(4, 1, 1, 1).expand(4, 3, 3, 3)
    torch.testing.assert_close(fg, expected.float(), rtol=1e-6, atol=0)
