"""torch as a second oracle (skipped when torch is not installed): the optimizers against
torch.optim over several steps, and whole-model gradients against torch autograd."""

import numpy as np
import pytest

import fastnn as fnn

torch = pytest.importorskip("torch")


def _params(rng, shapes):
    return [fnn.Parameter(rng.standard_normal(s)) for s in shapes]


def _run_both(make_fnn, make_torch, steps=6, shapes=((4, 3), (3,), (1, 1))):
    rng = np.random.default_rng(0)
    ours = _params(rng, shapes)
    theirs = [torch.tensor(p.data.copy(), requires_grad=True) for p in ours]
    opt, topt = make_fnn(ours), make_torch(theirs)
    for step in range(steps):
        for p, t in zip(ours, theirs, strict=True):
            g = rng.standard_normal(p.shape)
            p.grad[...] = g
            t.grad = torch.tensor(g)
        opt.step()
        topt.step()
        for p, t in zip(ours, theirs, strict=True):
            # float64 both sides; only the order of a few operations differs
            np.testing.assert_allclose(
                p.data, t.detach().numpy(), rtol=1e-12, atol=1e-14, err_msg=f"step {step + 1}"
            )


SGD_CONFIGS = [
    dict(lr=0.1),
    dict(lr=0.1, weight_decay=0.01),
    dict(lr=0.05, momentum=0.9),
    dict(lr=0.05, momentum=0.9, dampening=0.3),
    dict(lr=0.05, momentum=0.9, nesterov=True),
    dict(lr=0.05, momentum=0.8, dampening=0.1, weight_decay=0.05),
    dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
]


@pytest.mark.parametrize("config", SGD_CONFIGS, ids=str)
def test_sgd_matches_torch(config):
    _run_both(lambda ps: fnn.SGD(ps, **config), lambda ts: torch.optim.SGD(ts, **config))


ADAM_CONFIGS = [
    dict(lr=0.01),
    dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6),
    dict(lr=0.01, weight_decay=0.1),
]


@pytest.mark.parametrize("config", ADAM_CONFIGS, ids=str)
def test_adam_matches_torch(config):
    _run_both(lambda ps: fnn.Adam(ps, **config), lambda ts: torch.optim.Adam(ts, **config))


@pytest.mark.parametrize("config", [dict(lr=0.01), dict(lr=0.01, weight_decay=0.1)], ids=str)
def test_adamw_matches_torch(config):
    _run_both(lambda ps: fnn.AdamW(ps, **config), lambda ts: torch.optim.AdamW(ts, **config))


def _torch_forward(layers, params, X):
    """The same model in torch, written with functional ops on fastnn's (n_in, n_out) weights."""
    it = iter(params)
    H = X
    for layer in layers:
        if isinstance(layer, fnn.Linear):
            H = H @ next(it)
            if layer.bias is not None:
                H = H + next(it)
        elif isinstance(layer, fnn.LeakyReLU):
            H = torch.nn.functional.leaky_relu(H, layer.alpha)
        elif isinstance(layer, fnn.ReLU):
            H = torch.relu(H)
        elif isinstance(layer, fnn.Sigmoid):
            H = torch.sigmoid(H)
        elif isinstance(layer, fnn.Tanh):
            H = torch.tanh(H)
        elif isinstance(layer, fnn.Softmax):
            H = torch.softmax(H, dim=1)
    return H


MODELS = {
    "relu-sce": (
        lambda: [
            fnn.Linear(5, 7, seed=0, dtype=np.float64),
            fnn.ReLU(),
            fnn.Linear(7, 4, seed=1, dtype=np.float64),
        ],
        "sce",
    ),
    "leaky-tanh-sce": (
        lambda: [
            fnn.Linear(5, 7, seed=0, dtype=np.float64),
            fnn.LeakyReLU(0.1),
            fnn.Tanh(),
            fnn.Linear(7, 4, seed=1, dtype=np.float64, bias=False),
        ],
        "sce",
    ),
    "sigmoid-softmax-ce": (
        lambda: [
            fnn.Linear(5, 7, seed=0, dtype=np.float64),
            fnn.Sigmoid(),
            fnn.Linear(7, 4, seed=1, dtype=np.float64),
            fnn.Softmax(),
        ],
        "ce",
    ),
    "tanh-mse": (
        lambda: [
            fnn.Linear(5, 7, seed=0, dtype=np.float64),
            fnn.Tanh(),
            fnn.Linear(7, 4, seed=1, dtype=np.float64),
        ],
        "mse",
    ),
}


@pytest.mark.parametrize("name", list(MODELS))
def test_model_gradients_match_autograd(name):
    make, loss_name = MODELS[name]
    layers = make()
    model = fnn.Sequential(*layers)
    rng = np.random.default_rng(1)
    for p in model.parameters():
        p.data[...] += rng.standard_normal(p.shape) * 0.1
    X = rng.standard_normal((9, 5))
    y = rng.integers(0, 4, 9)
    T = rng.standard_normal((9, 4))
    loss = {"sce": fnn.SoftmaxCrossEntropy, "ce": fnn.CrossEntropy, "mse": fnn.MSELoss}[loss_name]()
    target = T if loss_name == "mse" else y
    value = loss.forward(model.forward(X), target)
    dX = model.backward(loss.backward())

    tp = [torch.tensor(p.data.copy(), requires_grad=True) for p in model.parameters()]
    tX = torch.tensor(X, requires_grad=True)
    out = _torch_forward(layers, tp, tX)
    if loss_name == "sce":
        tl = torch.nn.functional.cross_entropy(out, torch.tensor(y))
    elif loss_name == "ce":
        tl = torch.nn.functional.nll_loss(torch.log(out), torch.tensor(y))
    else:
        tl = torch.nn.functional.mse_loss(out, torch.tensor(T))
    tl.backward()
    assert value == pytest.approx(tl.item(), rel=1e-12)
    for p, t in zip(model.parameters(), tp, strict=True):
        np.testing.assert_allclose(p.grad, t.grad.numpy(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(dX, tX.grad.numpy(), rtol=1e-10, atol=1e-13)
