"""The sweep of the paper's section III.B, the selection of configurations and the bridge to ΔW.

Protocol (the paper's, with the choices it leaves open written down here):

* **Data.**  MNIST from :func:`lowrank_blocks.datasets.load_mnist`, pixels ``/ 255``.  Training
  digits 0–4 pre-train the network; training digits 5–9 (labels mapped to 0–4, so the frozen
  5-way classifier is re-used) are split at random into training and validation parts
  (``n_val`` images for validation); test digits 5–9 give the final accuracies only.  The test
  set is never used to choose anything.
* **Pre-training.**  Table II's network from PyTorch's default initialisation, Adam
  (``pretrain_lr``, ``pretrain_epochs`` epochs, batch ``batch_size``) on digits 0–4.
* **Adaptation.**  Full fine-tuning (all 50,565 parameters) is the reference; each adapter is a
  :class:`~analysis.fig2.mlp.BlockAdapter` on the frozen ``64 × 784`` hidden weight built from the
  library's :class:`~lowrank_blocks.Global` (LoRA), :class:`~lowrank_blocks.DiagonalBlocks`
  (MELoRA) or :class:`~lowrank_blocks.BlockGrid` (Localized LoRA), so every parameter count is
  ``structure.n_params((64, 784))``.  Every run: Adam, ``epochs`` epochs, batch ``batch_size``,
  one seed for both the adapter initialisation and the batch order.
* **Sweep.**  Learning rates {1e-4, 2e-4, 5e-4}; LoRA ranks {2, 4, 8, 16, 32}; MELoRA ranks
  {2, 4, 8, 16, 32} × N ∈ {2, 4, 8, 16}; Localized LoRA ranks {2, 4, 8, 16} × K ∈ {2, 4, 8, 16};
  configurations whose block rank reaches the smaller side of its block are left out (the paper:
  "block rank approached or exceeded block size"), see :func:`paper_configurations`.
* **Selection.**  Per configuration, the learning rate with the lowest final validation loss;
  per method and parameter budget, the configuration with the lowest validation loss (the
  paper's "best-performing configuration at each parameter budget ... based on validation
  loss").  The selected points (and full fine-tuning) are then re-trained with further seeds and
  reported as mean ± sample standard deviation of the test accuracy.
* **Accuracy drop** of a run = (mean test accuracy of full fine-tuning over the seeds) − (its
  test accuracy), in percentage points.
* **Bridge.**  ``ΔW = W1_finetuned − W1_pretrained`` of full fine-tuning (selected learning rate,
  first seed) is approximated under every structure of the sweep with
  :func:`lowrank_blocks.approximate`; the relative Frobenius error sits next to the test accuracy
  of the adapter trained with that structure.

Epochs (the paper does not say): **40** for every adaptation run.  Measured on the 2-core
machine with one BLAS thread: an epoch over the 24,404 training images takes 0.1–0.35 s for an
adapter (the frozen pre-activation is computed once, so a step touches only the adapter and the
frozen head) and about 0.3 s for full fine-tuning; the full sweep is 106 runs (25 configurations
and full fine-tuning × 3 learning rates, then 13 selected points and full fine-tuning × 2 more
seeds).  20 epochs took 4.2 minutes; 40 epochs took 9.7 minutes (wall, with other work on the
machine), well inside the half-hour budget, while getting closer to convergence: at these small
learning rates the adapters still improve between 20 and 40 epochs (LoRA r=32: 97.17% → 97.50%,
Localized LoRA K=8, r=2: 96.91% → 97.71% mean test accuracy), and at 20 epochs the largest
learning rate was selected for every configuration.  ``--epochs`` changes it.  Sensitivity: at
20 epochs the first claim held at 6 of 7 comparisons (Localized LoRA K=2, r=4 tied LoRA r=8 at
6,784 parameters, 2.22 ± 0.07 vs 2.19 ± 0.14 points drop), the second partly (1 of 2, as at 40)
and the third not at all (0 of 3; 1 of 3 at 40 epochs).

Differences from the paper, where it is silent or differs: the paper describes Localized LoRA's
input as "reshaped into a K × K spatial grid"; here, as the library defines it, the ``64 × 784``
weight is split into ``K`` contiguous row parts (hidden units) and ``K`` contiguous column parts of
the row-major flattened image (horizontal bands of ``784 / K`` pixels).  Adapter initialisation
(``A ~ U(±1/√n_b)``, ``B = 0``, no ``α / r`` scaling), batch size 64 and the pre-training recipe
are choices made here.  The paper's "block rank approached or exceeded block size" is read as
``rank >= min(m_b, n_b)``.

Budgets: on the ``64 × 784`` weight a uniform-rank LoRA or MELoRA costs ``848 r`` parameters
whatever ``N`` is, Localized LoRA ``848 r K``; so the budgets of the sweep are 848 × {2, 4, …, 32}
and several configurations share a budget.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import pandas as pd
from scipy import stats
from tqdm.auto import tqdm

from lowrank_blocks import (
    BlockGrid,
    DiagonalBlocks,
    Global,
    Structure,
    approximate,
    error_vs_budget,
)
from lowrank_blocks.datasets import load_mnist
from lowrank_blocks.structures import STRUCTURE_TYPES

from .mlp import (
    FULL_FINETUNE_PARAMS,
    HIDDEN_SHAPE,
    MLP,
    AdapterModel,
    BlockAdapter,
    FullModel,
    evaluate,
    fit,
)

__all__ = [
    "METHODS",
    "PAPER_FULL_FINETUNE_ACCURACY",
    "Data",
    "Results",
    "Settings",
    "bridge_correlation",
    "bridge_orderings",
    "bridge_table",
    "check_claims",
    "load_data",
    "method_name",
    "min_block_side",
    "paper_configurations",
    "pretrain",
    "run_sweep",
    "train_run",
]

#: Method names as in the paper (the structure classes' ``paper_name``), in plotting order.
METHODS = tuple(cls.paper_name for cls in STRUCTURE_TYPES)
#: Full fine-tuning accuracy on digits 5–9 printed under the paper's Fig. 2 (percent).
PAPER_FULL_FINETUNE_ACCURACY = 97.59

LEARNING_RATES = (1e-4, 2e-4, 5e-4)
LORA_RANKS = (2, 4, 8, 16, 32)
MELORA_RANKS = (2, 4, 8, 16, 32)
MELORA_BLOCKS = (2, 4, 8, 16)
LOCALIZED_RANKS = (2, 4, 8, 16)
LOCALIZED_GRIDS = (2, 4, 8, 16)


def method_name(structure: Structure | None) -> str:
    """The paper's name of a structure's method (``None`` is full fine-tuning)."""
    return "Full fine-tuning" if structure is None else structure.paper_name


def min_block_side(structure: Structure, shape: tuple[int, int] = HIDDEN_SHAPE) -> int:
    """Smallest side ``min(m_b, n_b)`` over the structure's active blocks on a ``shape`` matrix."""
    part = structure.partition(shape)
    return min(min(part.block_shape(i, j)) for i, j in structure.blocks)


def paper_configurations(
    shape: tuple[int, int] = HIDDEN_SHAPE,
) -> tuple[list[Structure], list[tuple[Structure, str]]]:
    """The paper's adapter configurations on a ``shape`` weight, and those left out.

    A configuration is left out when its block rank reaches the smaller side of its smallest
    block (``rank >= min(m_b, n_b)``): such a block is no longer low-rank.

    Returns
    -------
    kept : list of Structure
        LoRA, then MELoRA, then Localized LoRA configurations.
    left_out : list of (Structure, str)
        The configurations left out, each with the reason.

    Examples
    --------
    >>> kept, left_out = paper_configurations()
    >>> len(kept), len(left_out)
    (25, 16)
    >>> left_out[0][0]
    DiagonalBlocks(n_blocks=2, rank=32)
    """
    candidates: list[Structure] = [Global(r) for r in LORA_RANKS]
    candidates += [DiagonalBlocks(n, r) for n in MELORA_BLOCKS for r in MELORA_RANKS]
    candidates += [BlockGrid(k, r) for k in LOCALIZED_GRIDS for r in LOCALIZED_RANKS]
    kept, left_out = [], []
    for s in candidates:
        side = min_block_side(s, shape)
        rank = s.rank if isinstance(s.rank, int) else max(s.rank)
        if rank >= side:
            part = s.partition(shape)
            mb, nb = min((part.block_shape(i, j) for i, j in s.blocks), key=min)
            left_out.append((s, f"rank {rank} >= smallest block side ({mb} × {nb} block)"))
        else:
            kept.append(s)
    return kept, left_out


# --- settings and data ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """Everything that defines a run of the experiment.

    The defaults are the full sweep; :meth:`quick` is the reduced version used by the tests.
    """

    learning_rates: tuple[float, ...] = LEARNING_RATES
    epochs: int = 40  # see the module docstring
    batch_size: int = 64
    pretrain_epochs: int = 5
    pretrain_lr: float = 1e-3
    n_val: int = 5000
    seeds: tuple[int, ...] = (0, 1, 2)  # seeds[0] runs the sweep; all seeds the final points
    data_seed: int = 0  # validation split and subsets
    pretrain_seed: int = 0
    max_pretrain: int | None = None  # subsets (None = all images)
    max_train: int | None = None  # of the 5–9 training images, before the validation split
    max_test: int | None = None
    configurations: tuple[Structure, ...] | None = None  # None = paper_configurations()
    dtype: str = "float32"

    @classmethod
    def quick(cls, **changes: object) -> Settings:
        """A reduced run: one learning rate, three configurations, one epoch, few images."""
        base = cls(
            learning_rates=(5e-4,),
            epochs=1,
            pretrain_epochs=1,
            n_val=500,
            seeds=(0,),
            max_pretrain=3000,
            max_train=2500,
            max_test=1000,
            configurations=(Global(4), DiagonalBlocks(2, 4), BlockGrid(2, 2)),  # all 3,392 params
        )
        return replace(base, **changes)  # type: ignore[arg-type]

    def structures(self) -> list[Structure]:
        if self.configurations is None:
            return paper_configurations()[0]
        return list(self.configurations)


@dataclass(frozen=True)
class Data:
    """Flattened images (``/ 255``) and labels of the experiment's parts."""

    x_pretrain: np.ndarray  # training digits 0-4
    y_pretrain: np.ndarray
    x_pretest: np.ndarray  # test digits 0-4 (reported only)
    y_pretest: np.ndarray
    x_train: np.ndarray  # training digits 5-9, labels - 5
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray  # test digits 5-9, labels - 5
    y_test: np.ndarray

    def sizes(self) -> dict[str, int]:
        return {
            name: int(getattr(self, "y_" + name).size)
            for name in ("pretrain", "pretest", "train", "val", "test")
        }


def _subset(rng: np.random.Generator, n: int, limit: int | None) -> np.ndarray:
    if limit is None or limit >= n:
        return np.arange(n)
    return np.sort(rng.choice(n, size=limit, replace=False))


def load_data(settings: Settings) -> Data:
    """Load MNIST and split it as the experiment needs (see the module docstring)."""
    rng = np.random.default_rng(settings.data_seed)
    dtype = np.dtype(settings.dtype)
    train, test = load_mnist("train"), load_mnist("test")

    def flat(images: np.ndarray) -> np.ndarray:
        return (images.reshape(len(images), -1) / 255.0).astype(dtype)

    low = np.flatnonzero(train.labels < 5)
    low = low[_subset(rng, low.size, settings.max_pretrain)]
    low_test = np.flatnonzero(test.labels < 5)
    low_test = low_test[_subset(rng, low_test.size, settings.max_test)]
    high = np.flatnonzero(train.labels >= 5)
    high = high[_subset(rng, high.size, settings.max_train)]
    high = high[rng.permutation(high.size)]
    if not 0 < settings.n_val < high.size:
        raise ValueError(
            f"n_val={settings.n_val} must be between 1 and {high.size - 1} (the number of "
            f"training images of digits 5-9 used, minus one)"
        )
    val, fit_part = np.sort(high[: settings.n_val]), np.sort(high[settings.n_val :])
    high_test = np.flatnonzero(test.labels >= 5)
    high_test = high_test[_subset(rng, high_test.size, settings.max_test)]
    return Data(
        x_pretrain=flat(train.images[low]),
        y_pretrain=train.labels[low].copy(),
        x_pretest=flat(test.images[low_test]),
        y_pretest=test.labels[low_test].copy(),
        x_train=flat(train.images[fit_part]),
        y_train=train.labels[fit_part] - 5,
        x_val=flat(train.images[val]),
        y_val=train.labels[val] - 5,
        x_test=flat(test.images[high_test]),
        y_test=test.labels[high_test] - 5,
    )


# --- training runs --------------------------------------------------------------------------------


def pretrain(data: Data, settings: Settings) -> tuple[MLP, dict[str, float]]:
    """Train Table II's network on digits 0–4; returns it and its accuracies."""
    rng = np.random.default_rng(settings.pretrain_seed)
    mlp = MLP.initialise(rng, dtype=np.dtype(settings.dtype).type)
    model = FullModel(mlp)
    fit(
        model,
        model.prepare(data.x_pretrain),
        data.y_pretrain,
        lr=settings.pretrain_lr,
        epochs=settings.pretrain_epochs,
        batch_size=settings.batch_size,
        rng=rng,
    )
    _, acc_low = evaluate(model, model.prepare(data.x_pretest), data.y_pretest)
    _, acc_zero = evaluate(model, model.prepare(data.x_test), data.y_test)
    return mlp, {"pretrain_test_accuracy_0_4": acc_low, "zero_shot_test_accuracy_5_9": acc_zero}


@dataclass
class _Prepared:
    """Model inputs prepared once per frozen network (frozen pre-activations included)."""

    train: tuple[np.ndarray, ...]
    val: tuple[np.ndarray, ...]
    test: tuple[np.ndarray, ...]


def train_run(
    frozen: MLP,
    structure: Structure | None,
    lr: float,
    seed: int,
    data: Data,
    settings: Settings,
    prepared: _Prepared | None = None,
) -> tuple[dict[str, object], FullModel | AdapterModel]:
    """Adapt ``frozen`` to digits 5–9: full fine-tuning (``structure=None``) or an adapter.

    ``frozen`` is never modified (full fine-tuning trains a copy).  ``seed`` drives the adapter
    initialisation and the batch order.  Returns the run's record and the trained model.
    """
    rng = np.random.default_rng(seed)
    if structure is None:
        model: FullModel | AdapterModel = FullModel(frozen.copy())
    else:
        adapter = BlockAdapter(structure, rng=rng, dtype=frozen.theta.dtype.type)
        model = AdapterModel(frozen, adapter)
        if model.n_params != structure.n_params(HIDDEN_SHAPE):
            raise AssertionError("adapter size differs from the library's parameter count")
    if prepared is None:
        prepared = _prepare(model, data)
    start = time.perf_counter()
    history = fit(
        model,
        prepared.train,
        data.y_train,
        lr=lr,
        epochs=settings.epochs,
        batch_size=settings.batch_size,
        rng=rng,
    )
    seconds = time.perf_counter() - start
    val_loss, val_acc = evaluate(model, prepared.val, data.y_val)
    test_loss, test_acc = evaluate(model, prepared.test, data.y_test)
    record: dict[str, object] = {
        "method": method_name(structure),
        "structure": "full" if structure is None else repr(structure),
        "config": _config_label(structure),
        "grid": None if structure is None else structure.grid_label,
        "rank": None if structure is None else structure.rank,
        "n_params": model.n_params,
        "share": model.n_params / FULL_FINETUNE_PARAMS,
        "lr": lr,
        "seed": seed,
        "train_loss": history[-1] if history else math.nan,
        "val_loss": val_loss,
        "val_accuracy": val_acc,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        "seconds": seconds,
    }
    return record, model


def _prepare(model: FullModel | AdapterModel, data: Data) -> _Prepared:
    return _Prepared(
        model.prepare(data.x_train), model.prepare(data.x_val), model.prepare(data.x_test)
    )


def _config_label(structure: Structure | None) -> str:
    """The structure's own label (``'grid 2×2, r=2'``), or ``'all parameters'``."""
    return "all parameters" if structure is None else structure.label


@contextlib.contextmanager
def _single_blas_thread() -> Iterator[None]:
    """One BLAS thread: the matrices here are tiny and threading makes them ~10× slower."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional; ``python -m analysis.fig2`` sets the environment instead
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


# --- the sweep ------------------------------------------------------------------------------------


@dataclass
class Results:
    """Everything the sweep produces (see :func:`run_sweep`)."""

    settings: Settings
    data_sizes: dict[str, int]
    pretrain: dict[str, float]
    runs: pd.DataFrame  # every training run
    configs: pd.DataFrame  # one row per configuration, at its selected learning rate
    table: pd.DataFrame  # best configuration per method and budget, over the seeds
    full: dict[str, float]  # full fine-tuning over the seeds
    bridge: pd.DataFrame  # ΔW approximation error next to the adapters' accuracy
    left_out: list[tuple[str, str]]
    claims: list[dict[str, object]] = field(default_factory=list)
    wall_seconds: float = 0.0
    # ΔW under the library's error_vs_budget at the sweep's budgets (best grid per family,
    # uniform and optimal per-block ranks; rank integers charged): ``Curve.to_frame()``.
    curve: pd.DataFrame = field(default_factory=pd.DataFrame)


def run_sweep(settings: Settings | None = None, *, progress: bool = True) -> Results:
    """Run the experiment of section III.B (see the module docstring for the protocol).

    Parameters
    ----------
    settings : Settings, optional
        Defaults to the full sweep, ``Settings()``.
    progress : bool, default True
        Show a tqdm progress bar over the training runs (only on a terminal).

    Returns
    -------
    Results
    """
    settings = settings or Settings()
    start = time.perf_counter()
    with _single_blas_thread():
        results = _run(settings, progress)
    results.wall_seconds = time.perf_counter() - start
    return results


def _run(settings: Settings, progress: bool) -> Results:
    data = load_data(settings)
    structures = settings.structures()
    lrs, seeds = settings.learning_rates, settings.seeds
    bar = tqdm(
        total=(len(structures) + 1) * len(lrs) + 1,
        desc="fig2 sweep",
        unit="run",
        disable=None if progress else True,
    )
    bar.set_postfix_str("pre-training")
    frozen, pre_info = pretrain(data, settings)
    bar.update(1)

    # Inputs with the frozen pre-activation are shared by all adapter runs; full fine-tuning
    # needs the images only.
    probe = AdapterModel(frozen, BlockAdapter(Global(1), dtype=frozen.theta.dtype.type))
    prepared_adapter = _prepare(probe, data)
    prepared_full = _Prepared((data.x_train,), (data.x_val,), (data.x_test,))

    runs: list[dict[str, object]] = []
    full_models: dict[tuple[float, int], FullModel] = {}

    def one(structure: Structure | None, lr: float, seed: int) -> None:
        bar.set_postfix_str(f"{method_name(structure)} {_config_label(structure)} lr={lr:g}")
        prepared = prepared_full if structure is None else prepared_adapter
        record, model = train_run(frozen, structure, lr, seed, data, settings, prepared)
        runs.append(record)
        if structure is None:
            full_models[(lr, seed)] = model  # type: ignore[assignment]
        bar.update(1)

    # 1. the sweep: every configuration at every learning rate, first seed
    for lr in lrs:
        one(None, lr, seeds[0])
    for structure in structures:
        for lr in lrs:
            one(structure, lr, seeds[0])
    sweep = pd.DataFrame(runs)

    # 2. selection on the validation loss: learning rate per configuration, then the
    #    configuration per method and budget
    configs = _select_lr(sweep)
    best = _select_per_budget(configs)
    by_name = {repr(s): s for s in structures}

    # 3. the selected points and full fine-tuning with the other seeds
    bar.total += (len(best) + 1) * (len(seeds) - 1)
    bar.refresh()
    full_lr = float(configs.loc[configs["method"] == "Full fine-tuning", "lr"].iloc[0])
    for seed in seeds[1:]:
        one(None, full_lr, seed)
        for row in best.itertuples():
            one(by_name[row.structure], float(row.lr), seed)
    bar.close()
    all_runs = pd.DataFrame(runs)

    full_runs = all_runs[(all_runs["method"] == "Full fine-tuning") & (all_runs["lr"] == full_lr)]
    full_acc = 100.0 * full_runs["test_accuracy"].to_numpy()
    full = {
        "lr": full_lr,
        "n_params": FULL_FINETUNE_PARAMS,
        "test_accuracy_mean": float(full_acc.mean()),
        "test_accuracy_std": _std(full_acc),
        "n_seeds": int(full_acc.size),
    }
    table = _seed_table(best, all_runs, full["test_accuracy_mean"])
    configs = configs.assign(drop=full["test_accuracy_mean"] - 100.0 * configs["test_accuracy"])

    # 4. the bridge: ΔW of full fine-tuning under every structure of the sweep
    delta_w = full_models[(full_lr, seeds[0])].mlp.W1.astype(np.float64) - frozen.W1.astype(
        np.float64
    )
    bridge = bridge_table(delta_w, configs[configs["method"] != "Full fine-tuning"], by_name)
    budgets = sorted(int(b) for b in bridge["n_params"].unique()) if len(bridge) else []
    curve = (
        error_vs_budget(delta_w, budgets, grids=[2, 4, 8, 16], diagonal=[2, 4, 8, 16]).to_frame()
        if budgets else pd.DataFrame()
    )

    _, left_out = paper_configurations()
    results = Results(
        settings=settings,
        data_sizes=data.sizes(),
        pretrain=pre_info,
        runs=all_runs,
        configs=configs,
        table=table,
        full=full,
        bridge=bridge,
        curve=curve,
        left_out=[(repr(s), why) for s, why in left_out] if settings.configurations is None else [],
    )
    results.claims = check_claims(table)
    return results


def _std(values: np.ndarray) -> float:
    """Sample standard deviation (ddof=1); 0 for a single value."""
    return float(np.std(values, ddof=1)) if values.size > 1 else 0.0


def _select_lr(sweep: pd.DataFrame) -> pd.DataFrame:
    """One row per configuration: the learning rate with the lowest validation loss."""
    idx = sweep.groupby("structure", sort=False)["val_loss"].idxmin()
    return sweep.loc[idx].reset_index(drop=True)


def _select_per_budget(configs: pd.DataFrame) -> pd.DataFrame:
    """One row per (method, budget): the configuration with the lowest validation loss."""
    adapters = configs[configs["method"] != "Full fine-tuning"]
    idx = adapters.groupby(["method", "n_params"], sort=False)["val_loss"].idxmin()
    out = adapters.loc[idx].copy()
    out["method"] = pd.Categorical(out["method"], categories=METHODS, ordered=True)
    out = out.sort_values(["method", "n_params"]).reset_index(drop=True)
    out["method"] = out["method"].astype(str)
    return out


def _seed_table(best: pd.DataFrame, runs: pd.DataFrame, full_mean: float) -> pd.DataFrame:
    """Fig. 2's table: the selected configuration per budget, test accuracy over the seeds."""
    rows = []
    for row in best.itertuples():
        mine = runs[(runs["structure"] == row.structure) & (runs["lr"] == row.lr)]
        mine = mine.drop_duplicates("seed")
        acc = 100.0 * mine["test_accuracy"].to_numpy()
        drop = full_mean - acc
        rows.append(
            {
                "method": row.method,
                "config": row.config,
                "structure": row.structure,
                "n_params": int(row.n_params),
                "share_percent": 100.0 * row.n_params / FULL_FINETUNE_PARAMS,
                "lr": row.lr,
                "val_loss": row.val_loss,
                "test_accuracy_mean": float(acc.mean()),
                "test_accuracy_std": _std(acc),
                "drop_mean": float(drop.mean()),
                "drop_std": _std(drop),
                "n_seeds": int(acc.size),
            }
        )
    return pd.DataFrame(rows)


def bridge_table(
    delta_w: np.ndarray, configs: pd.DataFrame, structures: dict[str, Structure]
) -> pd.DataFrame:
    """The approximation error of ``delta_w`` under every configuration, next to its accuracy.

    Parameters
    ----------
    delta_w : numpy.ndarray, shape (64, 784)
        The hidden-weight update of full fine-tuning.
    configs : pandas.DataFrame
        One row per adapter configuration (columns ``structure``, ``method``, ``config``,
        ``n_params``, ``lr``, ``val_loss``, ``test_accuracy`` and optionally ``drop``).
    structures : dict
        ``repr(structure) -> structure`` for the rows of ``configs``.

    Returns
    -------
    pandas.DataFrame
        One row per configuration with ``dw_error`` (relative Frobenius error of the optimal
        approximation of ``delta_w`` at that structure, from :func:`lowrank_blocks.approximate`),
        ``dw_energy`` (``1 − dw_error²``, the share of ``‖ΔW‖_F²`` captured) and
        ``best_dw_error_at_budget`` (smallest error of the method at that budget).
    """
    rows = []
    for row in configs.itertuples():
        s = structures[row.structure]
        approx = approximate(delta_w, s)
        assert approx.n_params == row.n_params
        rows.append(
            {
                "method": row.method,
                "config": row.config,
                "structure": row.structure,
                "n_params": int(row.n_params),
                "share_percent": 100.0 * row.n_params / FULL_FINETUNE_PARAMS,
                "dw_error": approx.error,
                "dw_energy": 1.0 - approx.error**2,
                "lr": row.lr,
                "val_loss": row.val_loss,
                "test_accuracy": 100.0 * row.test_accuracy,
                "drop": getattr(row, "drop", math.nan),
            }
        )
    out = pd.DataFrame(rows)
    if len(out):
        out["best_dw_error_at_budget"] = out.groupby(["method", "n_params"])["dw_error"].transform(
            "min"
        )
    return out


def bridge_orderings(bridge: pd.DataFrame, table: pd.DataFrame) -> pd.DataFrame:
    """Per budget: the methods ordered by ΔW error and by trained accuracy, and whether they agree.

    The ΔW order uses each method's lowest approximation error at the budget (over its
    configurations); the accuracy order uses the mean test accuracy over the seeds of the
    configuration selected on validation loss (``table``).
    """
    rows = []
    for n_params, g in bridge.groupby("n_params"):
        best_err = g.groupby("method")["dw_error"].min()
        t = table[table["n_params"] == n_params].set_index("method")["test_accuracy_mean"]
        methods = [m for m in METHODS if m in best_err.index and m in t.index]
        if len(methods) < 2:
            continue
        by_err = sorted(methods, key=lambda m: best_err[m])
        by_acc = sorted(methods, key=lambda m: -t[m])
        rows.append(
            {
                "n_params": int(n_params),
                "by_dw_error": " < ".join(f"{m} ({best_err[m]:.3f})" for m in by_err),
                "by_accuracy": " > ".join(f"{m} ({t[m]:.2f}%)" for m in by_acc),
                "agree": by_err == by_acc,
                "best_agree": by_err[0] == by_acc[0],
            }
        )
    return pd.DataFrame(rows)


def bridge_correlation(bridge: pd.DataFrame) -> float:
    """Spearman rank correlation between ΔW error and test accuracy over the configurations."""
    if len(bridge) < 3 or bridge["dw_error"].nunique() < 2:
        return math.nan
    return float(stats.spearmanr(bridge["dw_error"], bridge["test_accuracy"]).statistic)


# --- the paper's claims ---------------------------------------------------------------------------


def _point(table: pd.DataFrame, method: str, n_params: int) -> pd.Series | None:
    hit = table[(table["method"] == method) & (table["n_params"] == n_params)]
    return None if hit.empty else hit.iloc[0]


def _fmt(p: pd.Series) -> str:
    return f"{p['drop_mean']:.2f} ± {p['drop_std']:.2f}"


def _clear(a: pd.Series, b: pd.Series) -> bool:
    """``a`` below ``b`` by more than the two seed spreads together."""
    return bool(b["drop_mean"] - a["drop_mean"] > a["drop_std"] + b["drop_std"])


def check_claims(table: pd.DataFrame) -> list[dict[str, object]]:
    """Check the paper's claims about Fig. 2 against a table from :func:`run_sweep`.

    Claims checked (drops are mean over seeds, in percentage points):

    1. "Localized LoRA consistently achieves lower accuracy drop across the budget range,
       outperforming both LoRA and MELoRA": at every budget where Localized LoRA and another
       method both have a point, Localized LoRA's drop is the lower.
    2. "Localized LoRA matches the performance of MELoRA while using nearly half as many
       parameters": for every MELoRA budget ``b``, Localized LoRA at ``b / 2`` has a drop no
       larger than MELoRA's at ``b`` (checked where both points exist).
    3. "... and exceeds LoRA even when LoRA is granted a larger parameter budget": Localized LoRA
       at ``b`` against LoRA at ``2 b``.

    Returns
    -------
    list of dict
        ``claim``, ``holds`` (True / False / None when nothing could be compared), ``verdict``
        (a word), ``comparisons`` (list of text lines with the numbers).
    """
    loc = "Localized LoRA"
    out = []

    lines, wins, clear = [], [], []
    for p in table[table["method"] == loc].itertuples():
        for other in ("LoRA", "MELoRA"):
            q = _point(table, other, p.n_params)
            if q is None:
                continue
            a = table.loc[p.Index]
            won = a["drop_mean"] < q["drop_mean"]
            wins.append(won)
            clear.append(_clear(a, q))
            lines.append(
                f"{p.n_params} params ({p.share_percent:.1f}%): Localized LoRA {a['config']} drop "
                f"{_fmt(a)} vs {other} {q['config']} {_fmt(q)} -> "
                f"{'lower' if won else 'NOT lower'}"
                + (" (beyond the seed spread)" if clear[-1] else " (within the seed spread)")
            )
    out.append(
        _claim(
            "Localized LoRA consistently achieves lower accuracy drop across the budget range, "
            "outperforming both LoRA and MELoRA",
            wins,
            lines,
        )
    )

    for other, factor, text in (
        ("MELoRA", 2, "Localized LoRA matches MELoRA with nearly half the parameters"),
        ("LoRA", 2, "Localized LoRA exceeds LoRA even when LoRA is granted a larger budget"),
    ):
        lines, wins = [], []
        for q in table[table["method"] == other].itertuples():
            half = q.n_params // factor
            a = _point(table, loc, half) if q.n_params % factor == 0 else None
            b = table.loc[q.Index]
            if a is None:
                lines.append(f"{other} at {q.n_params}: no Localized LoRA point at {half} params")
                continue
            won = a["drop_mean"] <= b["drop_mean"]
            wins.append(won)
            lines.append(
                f"Localized LoRA {a['config']} at {half} params drop {_fmt(a)} vs {other} "
                f"{b['config']} at {q.n_params} params {_fmt(b)} -> "
                f"{'at least as good' if won else 'worse'}"
            )
        # the parameter ratio at which Localized LoRA first matches each point of the other method
        for q in table[table["method"] == other].itertuples():
            match = table[(table["method"] == loc) & (table["drop_mean"] <= q.drop_mean)]
            if match.empty:
                lines.append(
                    f"{other} {q.config} at {q.n_params} (drop {q.drop_mean:.2f}): no Localized "
                    f"LoRA point reaches its drop"
                )
            else:
                m = match.sort_values("n_params").iloc[0]
                lines.append(
                    f"{other} {q.config} at {q.n_params} (drop {q.drop_mean:.2f}): matched by "
                    f"Localized LoRA {m['config']} at {m['n_params']} params "
                    f"(ratio {m['n_params'] / q.n_params:.2f})"
                )
        out.append(_claim(text, wins, lines))
    return out


def _claim(text: str, wins: Sequence[bool], lines: list[str]) -> dict[str, object]:
    if not wins:
        holds, verdict = None, "not testable"
    elif all(wins):
        holds, verdict = True, "holds"
    elif any(wins):
        holds, verdict = False, f"partly ({sum(wins)} of {len(wins)} comparisons)"
    else:
        holds, verdict = False, "does not hold"
    return {"claim": text, "holds": holds, "verdict": verdict, "comparisons": lines}


def settings_dict(settings: Settings) -> dict[str, object]:
    """The settings as plain values (structures by their repr)."""
    d = asdict(settings)
    if settings.configurations is not None:
        d["configurations"] = [repr(s) for s in settings.configurations]
    return d
