"""Plain-NumPy references for every fastnn kernel, written from the maths, not from the kernels.

Each function takes the same inputs as the kernel it checks, computes in float64 with whole-array
NumPy operations and *returns* fresh arrays (the kernels write into outputs).  Derivatives are
computed from the pre-activation Z (the kernels use the activation output A), the softmax
backward goes through the explicit Jacobian, and the optimizer rules follow the pseudo-code in
torch.optim's documentation, so a shared mistake would have to be made twice in two different
forms.
"""

import numpy as np

IDENTITY, RELU, LEAKY_RELU, SIGMOID, TANH = 0, 1, 2, 3, 4


def _f64(a):
    return np.asarray(a, dtype=np.float64)


# -- activations --------------------------------------------------------------------------------
def activation(Z, code, alpha=0.0):
    """f(Z) elementwise."""
    Z = _f64(Z)
    if code == RELU:
        return np.maximum(Z, 0.0)
    if code == LEAKY_RELU:
        return np.where(Z > 0, Z, alpha * Z)
    if code == SIGMOID:
        # 1 / (1 + exp(-z)) = exp(-log(1 + exp(-z))), without overflow for large |z|
        return np.exp(-np.logaddexp(0.0, -Z))
    if code == TANH:
        return np.tanh(Z)
    return Z.copy()


def activation_grad(Z, code, alpha=0.0):
    """f'(Z) elementwise, from the pre-activation."""
    Z = _f64(Z)
    if code == RELU:
        return (Z > 0).astype(np.float64)
    if code == LEAKY_RELU:
        return np.where(Z > 0, 1.0, alpha)
    if code == SIGMOID:
        s = activation(Z, SIGMOID)
        return s * (1.0 - s)
    if code == TANH:
        return 1.0 / np.cosh(Z) ** 2
    return np.ones_like(Z)


# -- dense --------------------------------------------------------------------------------------
def dense_forward(X, W, b, code, alpha=0.0):
    """f(X @ W + b)."""
    return activation(_f64(X) @ _f64(W) + _f64(b), code, alpha)


def dense_backward(X, W, dZ, beta, dW0, db0, prev_grad=None):
    """(dW, db, dX) with dW = beta*dW0 + X.T dZ, db = beta*db0 + sum_rows(dZ),
    dX = (dZ W.T) * prev_grad (prev_grad: derivative of the activation that produced X)."""
    X, W, dZ = _f64(X), _f64(W), _f64(dZ)
    dW = beta * _f64(dW0) + np.einsum("ip,ij->pj", X, dZ)
    db = beta * _f64(db0) + dZ.sum(axis=0)
    dX = np.einsum("ij,pj->ip", dZ, W)
    if prev_grad is not None:
        dX = dX * prev_grad
    return dW, db, dX


def gemm(trans_a, trans_b, alpha, A, B, beta, C):
    A = _f64(A).T if trans_a else _f64(A)
    B = _f64(B).T if trans_b else _f64(B)
    return alpha * (A @ B) + beta * _f64(C)


# -- softmax ------------------------------------------------------------------------------------
def softmax(Z):
    Z = _f64(Z)
    E = np.exp(Z - Z.max(axis=1, keepdims=True))
    return E / E.sum(axis=1, keepdims=True)


def log_softmax(Z):
    Z = _f64(Z)
    shifted = Z - Z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax_backward(P, dP):
    """dZ_i = J_i^T dP_i with the full Jacobian J_i = diag(P_i) - P_i P_i^T of each row."""
    P, dP = _f64(P), _f64(dP)
    J = np.einsum("ij,jk->ijk", P, np.eye(P.shape[1])) - np.einsum("ij,ik->ijk", P, P)
    return np.einsum("ijk,ij->ik", J, dP)


# -- losses (value is the batch mean; gradients are those of the mean) -------------------------
def one_hot(y, k):
    T = np.zeros((len(y), k))
    T[np.arange(len(y)), y] = 1.0
    return T


def softmax_xent_targets(Z, T):
    T = _f64(T)
    L = log_softmax(Z)
    n = Z.shape[0]
    loss = -(T * L).sum() / n
    # d/dz_k of -sum_j T_j (z_j - lse(z)) = -T_k + (sum_j T_j) softmax(z)_k
    grad = (softmax(Z) * T.sum(axis=1, keepdims=True) - T) / n
    return loss, grad


def softmax_xent_labels(Z, y):
    return softmax_xent_targets(Z, one_hot(y, Z.shape[1]))


def cross_entropy_targets(P, T, eps):
    """-mean_i sum_j T_ij log(clip(P_ij, eps, 1)); gradient -T / clip(P) / n (the derivative of
    -T log p taken at the clipped p, the kernels' documented convention)."""
    P, T = _f64(P), _f64(T)
    n = P.shape[0]
    Pc = np.clip(P, eps, 1.0)
    return -(T * np.log(Pc)).sum() / n, -T / Pc / n


def cross_entropy_labels(P, y, eps):
    return cross_entropy_targets(P, one_hot(y, P.shape[1]), eps)


def mse(Y, T):
    D = _f64(Y) - _f64(T)
    return (D**2).mean(), 2.0 * D / D.size


# -- optimizers: torch.optim's documented algorithms, one step at a time -----------------------
def sgd_step(p, g, buf, *, lr, momentum=0.0, dampening=0.0, weight_decay=0.0, nesterov=False):
    """One torch.optim.SGD step; ``buf`` is None before the first step.  Returns (p, buf)."""
    g = g + weight_decay * p if weight_decay else g.copy()
    if momentum:
        buf = g.copy() if buf is None else momentum * buf + (1.0 - dampening) * g
        g = g + momentum * buf if nesterov else buf
    return p - lr * g, buf


def adam_step(p, g, m, v, t, *, lr, betas, eps, weight_decay=0.0, decoupled=False):
    """One torch.optim.Adam (decoupled=False) or AdamW (decoupled=True) step; t counts from 1.
    Returns (p, m, v)."""
    b1, b2 = betas
    if decoupled:
        p = p * (1.0 - lr * weight_decay)
    elif weight_decay:
        g = g + weight_decay * p
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * g * g
    m_hat = m / (1.0 - b1**t)
    v_hat = v / (1.0 - b2**t)
    return p - lr * m_hat / (np.sqrt(v_hat) + eps), m, v


# -- data ---------------------------------------------------------------------------------------
def gather_rows(X, idx):
    return np.asarray(X)[np.asarray(idx)]


def count_correct(Z, y):
    return int(np.sum(np.argmax(Z, axis=1) == y))


def all_finite(X):
    return bool(np.isfinite(X).all())
