"""The network of the paper's Table II, its block low-rank adapters and mini-batch Adam, in NumPy.

Network (Table II): ``784 → Linear(784, 64) [+ adapter] → ReLU → Linear(64, 5) → LogSoftmax``,
trained on the mean negative log-likelihood.  The hidden weight ``W1`` has shape ``64 × 784``
(outputs × inputs, like :class:`torch.nn.Linear`), so its update ``ΔW`` is a ``64 × 784`` matrix
and an adapter is a block low-rank parametrisation of that ``ΔW`` built from one of the library's
structures (:class:`~lowrank_blocks.Global` = LoRA, :class:`~lowrank_blocks.DiagonalBlocks` =
MELoRA, :class:`~lowrank_blocks.BlockGrid` = Localized LoRA).

For every active block ``(i, j)`` of the structure's partition with rank ``r`` the adapter holds
``B_ij`` (``m_i × r``) and ``A_ij`` (``r × n_j``) and adds, for an input batch ``x``
(``batch × 784``)::

    pre[:, rows_i] += x[:, cols_j] @ A_ijᵀ @ B_ijᵀ

so it is exactly the forward pass of ``x @ (W1 + ΔW)ᵀ`` with ``ΔW_ij = B_ij A_ij``, but computed
in factored form.  Column part ``j`` is a contiguous chunk of the row-major flattened image (a
horizontal band of pixels) and row part ``i`` a contiguous slice of the hidden units.

All parameters of a model live in one flat vector ``theta`` (the arrays used in the computation
are views into it), so the optimiser, the gradient checks and the parameter counts all work on one
array: ``theta.size`` *is* the number of trainable numbers.  Gradients are written by hand and
checked against finite differences in ``tests/test_fig2.py``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lowrank_blocks import Structure

__all__ = [
    "N_CLASSES",
    "N_HIDDEN",
    "N_IN",
    "HIDDEN_SHAPE",
    "FULL_FINETUNE_PARAMS",
    "Adam",
    "AdapterModel",
    "BlockAdapter",
    "FullModel",
    "MLP",
    "evaluate",
    "fit",
    "head_loss_and_grad",
    "log_softmax",
]

N_IN, N_HIDDEN, N_CLASSES = 784, 64, 5
#: Shape of the adapted hidden weight ``W1`` (outputs × inputs).
HIDDEN_SHAPE = (N_HIDDEN, N_IN)
#: Trainable numbers of full fine-tuning: ``784·64 + 64 + 64·5 + 5`` (the paper's 50,565).
FULL_FINETUNE_PARAMS = N_IN * N_HIDDEN + N_HIDDEN + N_HIDDEN * N_CLASSES + N_CLASSES
assert FULL_FINETUNE_PARAMS == 50_565


def log_softmax(z: np.ndarray) -> np.ndarray:
    """Row-wise ``log softmax`` of logits ``z`` (``batch × classes``), numerically stable."""
    shifted = z - z.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


# --- the frozen network ------------------------------------------------------------------------


class MLP:
    """The two-layer network of Table II with all parameters in one flat vector.

    Parameters
    ----------
    theta : numpy.ndarray
        Flat parameter vector ``[W1 (64·784), b1 (64), W2 (5·64), b2 (5)]``; the attributes
        ``W1``, ``b1``, ``W2``, ``b2`` are views into it.
    sizes : (int, int, int)
        ``(inputs, hidden, classes)``; ``(784, 64, 5)`` in the paper, smaller in tests.
    """

    def __init__(self, theta: np.ndarray, sizes: Sequence[int] = (N_IN, N_HIDDEN, N_CLASSES)):
        n_in, n_hidden, n_classes = (int(s) for s in sizes)
        expected = n_in * n_hidden + n_hidden + n_hidden * n_classes + n_classes
        if theta.ndim != 1 or theta.size != expected:
            raise ValueError(
                f"theta has shape {theta.shape}; an MLP with sizes {tuple(sizes)} needs a flat "
                f"vector of {expected} numbers"
            )
        self.sizes = (n_in, n_hidden, n_classes)
        self.theta = theta
        k = 0
        self.W1 = theta[k : k + n_hidden * n_in].reshape(n_hidden, n_in)
        k += n_hidden * n_in
        self.b1 = theta[k : k + n_hidden]
        k += n_hidden
        self.W2 = theta[k : k + n_classes * n_hidden].reshape(n_classes, n_hidden)
        k += n_classes * n_hidden
        self.b2 = theta[k : k + n_classes]

    @classmethod
    def initialise(
        cls,
        rng: np.random.Generator,
        sizes: Sequence[int] = (N_IN, N_HIDDEN, N_CLASSES),
        dtype: type = np.float64,
    ) -> MLP:
        """PyTorch's default ``nn.Linear`` initialisation: ``U(±1/√fan_in)``, weights and biases."""
        n_in, n_hidden, n_classes = sizes
        parts = []
        for fan_in, fan_out in ((n_in, n_hidden), (n_hidden, n_classes)):
            bound = 1.0 / np.sqrt(fan_in)
            parts.append(rng.uniform(-bound, bound, fan_out * fan_in))
            parts.append(rng.uniform(-bound, bound, fan_out))
        return cls(np.concatenate(parts).astype(dtype), sizes)

    def copy(self) -> MLP:
        return MLP(self.theta.copy(), self.sizes)

    @property
    def n_params(self) -> int:
        return int(self.theta.size)

    def hidden_pre(self, x: np.ndarray) -> np.ndarray:
        """Hidden pre-activation of the frozen layer, ``x @ W1ᵀ + b1``."""
        return x @ self.W1.T + self.b1

    def log_probs(self, x: np.ndarray, adapter: BlockAdapter | None = None) -> np.ndarray:
        """Log-probabilities (``batch × classes``), with the adapter's output added if given."""
        pre = self.hidden_pre(x)
        if adapter is not None:
            pre = pre + adapter.forward(x)[0]
        return log_softmax(np.maximum(pre, 0.0) @ self.W2.T + self.b2)


def head_loss_and_grad(
    pre: np.ndarray, y: np.ndarray, W2: np.ndarray, b2: np.ndarray, *, param_grads: bool = False
) -> tuple[float, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """Loss and gradients of ``mean NLL(log_softmax(relu(pre) @ W2ᵀ + b2), y)``.

    Returns
    -------
    loss : float
    dpre : numpy.ndarray
        Gradient with respect to the hidden pre-activation ``pre``.
    dW2, db2 : numpy.ndarray or None
        Gradients of the classifier (``None`` unless ``param_grads``).
    """
    n = pre.shape[0]
    h = np.maximum(pre, 0.0)
    logp = log_softmax(h @ W2.T + b2)
    rows = np.arange(n)
    loss = -float(logp[rows, y].mean())
    dlogits = np.exp(logp)
    dlogits[rows, y] -= 1.0
    dlogits /= n
    dh = dlogits @ W2
    dpre = dh * (pre > 0)
    if not param_grads:
        return loss, dpre, None, None
    return loss, dpre, dlogits.T @ h, dlogits.sum(axis=0)


# --- block low-rank adapters ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """Active blocks of equal shape ``(m_b, n_b)`` and rank ``r``, handled as one stack."""

    positions: tuple[int, ...]  # indices into structure.blocks
    m_b: int
    n_b: int
    rank: int
    row_index: np.ndarray  # (k, m_b) absolute rows of every block
    col_index: np.ndarray  # (k, n_b) absolute columns of every block
    rows_unique: np.ndarray  # (u, m_b) absolute rows of the distinct row parts
    row_onehot: np.ndarray  # (u, k) sums the blocks of one row part
    b_slice: slice  # of theta, shape (k, m_b, r)
    a_slice: slice  # of theta, shape (k, r, n_b)


class BlockAdapter:
    """Trainable block low-rank update ``ΔW`` of a weight of ``shape``, laid out by a structure.

    Parameters
    ----------
    structure : Structure
        :class:`~lowrank_blocks.Global`, :class:`~lowrank_blocks.DiagonalBlocks` or
        :class:`~lowrank_blocks.BlockGrid`, with one rank or per-block ranks; its partition,
        active blocks and ranks (``structure.block_ranks(shape)``) define the factors.
    shape : (int, int)
        Shape of the adapted weight, ``(64, 784)`` for the paper's hidden layer.
    rng : numpy.random.Generator, optional
        Initialises like LoRA / PyTorch ``nn.Linear``: every ``A_ij ~ U(±1/√n_j)`` (``n_j`` is the
        block's input width), every ``B_ij = 0``, so the adapter starts at ``ΔW = 0``.  Without a
        generator all parameters are zero.
    dtype : numpy dtype, default float64

    Attributes
    ----------
    theta : numpy.ndarray
        All factors in one flat vector; ``theta.size == structure.n_params(shape)``.
    """

    def __init__(
        self,
        structure: Structure,
        shape: tuple[int, int] = HIDDEN_SHAPE,
        rng: np.random.Generator | None = None,
        dtype: type = np.float64,
    ) -> None:
        self.structure = structure
        self.shape = (int(shape[0]), int(shape[1]))
        self.partition = part = structure.partition(self.shape)
        self.ranks = ranks = structure.block_ranks(self.shape)
        self.blocks = blocks = structure.blocks
        rofs, cofs = part.row_offsets, part.col_offsets

        by_key: dict[tuple[int, int, int], list[int]] = {}
        for k, ((i, j), r) in enumerate(zip(blocks, ranks)):
            if r > 0:
                by_key.setdefault((*part.block_shape(i, j), r), []).append(k)
        groups, offset = [], 0
        for (m_b, n_b, r), positions in by_key.items():
            rows = np.array([rofs[blocks[k][0]] for k in positions])
            cols = np.array([cofs[blocks[k][1]] for k in positions])
            uniq, inverse = np.unique(rows, return_inverse=True)
            onehot = np.zeros((uniq.size, len(positions)), dtype=dtype)
            onehot[inverse, np.arange(len(positions))] = 1.0
            kb = len(positions) * m_b * r
            ka = len(positions) * r * n_b
            groups.append(
                _Group(
                    positions=tuple(positions),
                    m_b=m_b,
                    n_b=n_b,
                    rank=r,
                    row_index=rows[:, None] + np.arange(m_b),
                    col_index=cols[:, None] + np.arange(n_b),
                    rows_unique=uniq[:, None] + np.arange(m_b),
                    row_onehot=onehot,
                    b_slice=slice(offset, offset + kb),
                    a_slice=slice(offset + kb, offset + kb + ka),
                )
            )
            offset += kb + ka
        self.groups: tuple[_Group, ...] = tuple(groups)
        self.theta = np.zeros(offset, dtype=dtype)
        if self.theta.size != structure.n_params(self.shape):  # the library's count is the truth
            raise AssertionError(
                f"{structure!r}: adapter stores {self.theta.size} numbers but "
                f"n_params={structure.n_params(self.shape)}"
            )
        if rng is not None:
            for g, (_, A) in zip(self.groups, self._views(self.theta)):
                bound = 1.0 / np.sqrt(g.n_b)
                A[...] = rng.uniform(-bound, bound, A.shape)

    @property
    def n_params(self) -> int:
        """Number of trainable numbers (``theta.size``)."""
        return int(self.theta.size)

    def _views(self, vec: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(B, A)`` stacks of every group as views into the flat vector ``vec``."""
        out = []
        for g in self.groups:
            k = len(g.positions)
            out.append(
                (
                    vec[g.b_slice].reshape(k, g.m_b, g.rank),
                    vec[g.a_slice].reshape(k, g.rank, g.n_b),
                )
            )
        return out

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, list]:
        """Adapter output ``x @ ΔWᵀ`` in factored form, and a cache for :meth:`backward`."""
        xT = np.ascontiguousarray(x.T)  # (n, batch)
        outT = np.zeros((self.shape[0], x.shape[0]), dtype=np.result_type(x, self.theta))
        cache = []
        for g, (B, A) in zip(self.groups, self._views(self.theta)):
            xs = xT[g.col_index]  # (k, n_b, batch)
            z = A @ xs  # (k, r, batch)
            u = B @ z  # (k, m_b, batch)
            k = len(g.positions)
            if g.row_onehot.shape[0] == k:  # every block has its own row part
                outT[g.row_index] += u
            else:
                acc = g.row_onehot @ u.reshape(k, -1)
                outT[g.rows_unique] += acc.reshape(-1, g.m_b, x.shape[0])
            cache.append((xs, z))
        return outT.T, cache

    def backward(self, dout: np.ndarray, cache: list) -> np.ndarray:
        """Gradient with respect to ``theta`` given ``dout`` = dLoss/d(adapter output)."""
        grad = np.zeros_like(self.theta)
        dT = np.ascontiguousarray(dout.T)  # (m, batch)
        for (B, _A), (dB, dA), g, (xs, z) in zip(
            self._views(self.theta), self._views(grad), self.groups, cache
        ):
            G = dT[g.row_index]  # (k, m_b, batch)
            dB[...] = G @ z.transpose(0, 2, 1)
            gz = B.transpose(0, 2, 1) @ G  # (k, r, batch)
            dA[...] = gz @ xs.transpose(0, 2, 1)
        return grad

    def factors(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """``(B_ij, A_ij)`` for every block in ``structure.blocks`` (rank-0 blocks: empty)."""
        part = self.partition
        out: list[tuple[np.ndarray, np.ndarray]] = [
            (np.zeros((part.block_shape(i, j)[0], 0)), np.zeros((0, part.block_shape(i, j)[1])))
            for i, j in self.blocks
        ]
        for g, (B, A) in zip(self.groups, self._views(self.theta)):
            for s, k in enumerate(g.positions):
                out[k] = (B[s], A[s])
        return out

    def delta_w(self) -> np.ndarray:
        """The dense update ``ΔW`` (``shape``), zero outside the active blocks."""
        dw = np.zeros(self.shape, dtype=self.theta.dtype)
        for (i, j), (B, A) in zip(self.blocks, self.factors()):
            rows, cols = self.partition.block_slices(i, j)
            dw[rows, cols] = B @ A
        return dw


# --- trainable models: what the optimiser sees ---------------------------------------------------


class FullModel:
    """Full fine-tuning: every parameter of the MLP is trainable (``theta`` is the MLP's)."""

    def __init__(self, mlp: MLP) -> None:
        self.mlp = mlp
        self.theta = mlp.theta

    @property
    def n_params(self) -> int:
        return int(self.theta.size)

    def prepare(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per-example inputs of :meth:`loss_and_grad` (batch first)."""
        return (x,)

    def loss_and_grad(
        self, inputs: tuple[np.ndarray, ...], y: np.ndarray
    ) -> tuple[float, np.ndarray]:
        (x,) = inputs
        m = self.mlp
        loss, dpre, dW2, db2 = head_loss_and_grad(m.hidden_pre(x), y, m.W2, m.b2, param_grads=True)
        grad = MLP(np.empty_like(self.theta), m.sizes)
        grad.W1[...] = dpre.T @ x
        grad.b1[...] = dpre.sum(axis=0)
        grad.W2[...] = dW2
        grad.b2[...] = db2
        return loss, grad.theta

    def log_probs(self, inputs: tuple[np.ndarray, ...]) -> np.ndarray:
        return self.mlp.log_probs(inputs[0])


class AdapterModel:
    """A frozen MLP with a trainable adapter before the ReLU (``theta`` is the adapter's).

    The frozen pre-activation ``x @ W1ᵀ + b1`` never changes, so :meth:`prepare` computes it once
    per data set and every training step only runs the adapter and the frozen head.
    """

    def __init__(self, mlp: MLP, adapter: BlockAdapter) -> None:
        if adapter.shape != mlp.W1.shape:
            raise ValueError(f"adapter shape {adapter.shape} != hidden weight {mlp.W1.shape}")
        self.mlp = mlp
        self.adapter = adapter
        self.theta = adapter.theta

    @property
    def n_params(self) -> int:
        return int(self.theta.size)

    def prepare(self, x: np.ndarray) -> tuple[np.ndarray, ...]:
        return (x, self.mlp.hidden_pre(x))

    def loss_and_grad(
        self, inputs: tuple[np.ndarray, ...], y: np.ndarray
    ) -> tuple[float, np.ndarray]:
        x, pre0 = inputs
        out, cache = self.adapter.forward(x)
        loss, dpre, _, _ = head_loss_and_grad(pre0 + out, y, self.mlp.W2, self.mlp.b2)
        return loss, self.adapter.backward(dpre, cache)

    def log_probs(self, inputs: tuple[np.ndarray, ...]) -> np.ndarray:
        x, pre0 = inputs
        pre = pre0 + self.adapter.forward(x)[0]
        return log_softmax(np.maximum(pre, 0.0) @ self.mlp.W2.T + self.mlp.b2)


class Adam:
    """Adam (Kingma & Ba) on a flat parameter vector, updated in place.

    Parameters
    ----------
    size : int
        Length of the parameter vector.
    lr : float
    betas : (float, float), default (0.9, 0.999)
    eps : float, default 1e-8
    """

    def __init__(
        self,
        size: int,
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        dtype: type = np.float64,
    ) -> None:
        self.lr, self.betas, self.eps = float(lr), betas, float(eps)
        self.m = np.zeros(size, dtype=dtype)
        self.v = np.zeros(size, dtype=dtype)
        self.t = 0

    def step(self, theta: np.ndarray, grad: np.ndarray) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m *= b1
        self.m += (1.0 - b1) * grad
        self.v *= b2
        self.v += (1.0 - b2) * grad * grad
        step = self.lr * np.sqrt(1.0 - b2**self.t) / (1.0 - b1**self.t)
        theta -= step * self.m / (np.sqrt(self.v) + self.eps * np.sqrt(1.0 - b2**self.t))


# --- training -------------------------------------------------------------------------------------

Model = FullModel | AdapterModel


def evaluate(
    model: Model, inputs: tuple[np.ndarray, ...], y: np.ndarray, batch_size: int = 4096
) -> tuple[float, float]:
    """Mean negative log-likelihood and accuracy of ``model`` on prepared ``inputs``."""
    n = y.shape[0]
    nll, correct = 0.0, 0
    for start in range(0, n, batch_size):
        sl = slice(start, start + batch_size)
        logp = model.log_probs(tuple(a[sl] for a in inputs))
        yb = y[sl]
        nll -= float(logp[np.arange(yb.size), yb].sum())
        correct += int((logp.argmax(axis=1) == yb).sum())
    return nll / n, correct / n


def fit(
    model: Model,
    inputs: tuple[np.ndarray, ...],
    y: np.ndarray,
    *,
    lr: float,
    epochs: int,
    batch_size: int,
    rng: np.random.Generator,
) -> list[float]:
    """Mini-batch Adam on ``model.theta`` (in place); returns the mean training loss per epoch.

    Every epoch visits the examples in a new random order drawn from ``rng``; the last, smaller
    batch of an epoch is kept.
    """
    opt = Adam(model.theta.size, lr, dtype=model.theta.dtype)
    n = y.shape[0]
    history = []
    for _ in range(epochs):
        order = rng.permutation(n)
        total = 0.0
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            loss, grad = model.loss_and_grad(tuple(a[idx] for a in inputs), y[idx])
            opt.step(model.theta, grad)
            total += loss * idx.size
        history.append(total / n)
    return history
