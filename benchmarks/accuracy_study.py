"""Benchmark 1: which path gives the most accurate compact model at equal MACs.

ResNet-20 (CIFAR-style, widths 16/32/64, the official LRPET code's zero-padded
option-A shortcuts) on Fashion-MNIST (Debian's `dataset-fashion-mnist`; the
first `train_images` training images, all 10,000 test images), batch 128,
4-pixel crop + flip augmentation for every run. The stem conv (one input
channel, a 9 x 16 matrix) stays dense in every variant but `lrpet_stem`.

* Reference: `dense` (E epochs) and `dense_2x` (2E epochs: the budget is
  converged when the two differ by less than 0.3 points).
* Scenario A, from scratch, E epochs, at each prune ratio g (ranks
  `r = int(K - K*g)`): LRPET with the paper's defaults (`lrpet`), with the
  rank ramp (`lrpet_ramp`), with BN re-estimation after training
  (`lrpet_recal`, applied to `lrpet`'s trained model: no training of its
  own), with `allocate_ranks` ranks at the same MACs (`lrpet_alloc_macs`,
  allocated on the `dense` model of the same seed), without energy transfer,
  without BN rectification; TRP-style truncation (`trp`); the compact
  architecture trained from scratch (`scratch`); SVD training with the
  released recipe, pruned to LRPET's MACs and fine-tuned (`svd`); and LRPET
  with the stem projected too (`lrpet_stem`, the collapse trap).
* Scenario B, compress a trained model: the `dense` seed-0 model (committed
  as `saved_models/fashion_mnist_resnet20_dense.keras`), F epochs of
  fine-tuning for every method: LRPET (`ft_lrpet`, `ft_lrpet_ramp`,
  `ft_lrpet_recal`, and `ft_lrpet_no_bnrect`, added when truncated SVD led:
  on the converged dense model at g = 0.5 one rectified projection left
  79.9% after BN re-estimation, plain truncation 87.4%), truncated SVD then
  fine-tuning (`ft_tsvd`; at `allocate_ranks` ranks of g's parameter count,
  `ft_tsvd_alloc`, and of g's MACs, `ft_tsvd_alloc_macs`), LRPET fine-tuning
  at the MACs-allocated ranks (`ft_lrpet_alloc_macs`), SVD training from the
  dense model (`ft_svd`: decompose with `init="svd"`, Hoyer, prune to LRPET's
  MACs, fine-tune). One explanatory row, seed 0, after B's later seeds:
  LRPET fine-tuning started from the truncated model
  (`ft_lrpet_trunc_first`: one plain truncation before epoch 1, `ft_tsvd`'s
  start, then `ft_lrpet`'s epochs), which tells
  whether LRPET fine-tuning trails `ft_tsvd` for its start or for its
  per-epoch projections.
* `allocate_ranks` budgets: the issue asked for g's parameter count, but on
  ResNet-20 that budget buys more MACs than uniform g (the early, cheap-in-
  parameters layers do most of the MACs): 1.27x instead of 1.78x fewer at
  g = 0.5, so those rows cannot be ranked. The MACs budget (`cost="macs"`,
  the uniform ranks' MACs) allocates at equal MACs; scenario A uses it only,
  scenario B both.
* Seeds: 1 and 2 for `dense`, the paper-default LRPET (and its BN
  re-estimation, derived without training), the best trained LRPET variant, the
  best allocation row and the best baseline of each scenario and g (best by
  seed 0, among the rows at equal MACs). The comparisons use those rows, so a
  runner-up with one seed never outranks a row with three. The allocation rows use
  lrpet_tf's `allocate_ranks` and no LRPET projection, so they are compared
  with both the baselines and the LRPET paths; the baselines are the
  published methods.
  Order: scenario B (seed 0, then its later seeds), then scenario A (seed 0
  of paper LRPET and the baselines, then of the variants, then dense's and
  A's later seeds, then the energy-transfer ablation and the stem trap), so
  the short scenario is answered first and A's ranking before its ablations.
  Without BN rectification is a variant in both scenarios (it could be the
  recommended path: it led LRPET fine-tuning at g = 0.75).

Resumable: each run trains in `<runs_dir>/<run>/` with `BackupAndRestore`
(a killed run continues from its last epoch), leaves a `.keras` file per
finished stage, and writes `<results_dir>/accuracy_study/<run>.json` when it
ends; runs whose JSON exists are skipped. The tables
(`<results_dir>/accuracy_study.md`) and the plot are rebuilt from those JSON
files alone (`--report_only`).

Usage:
    PYTHONPATH=. python benchmarks/accuracy_study.py               # the study (resumes)
    PYTHONPATH=. python benchmarks/accuracy_study.py --report_only # tables and plot only
    PYTHONPATH=. python benchmarks/accuracy_study.py --smoke       # digits, tiny, ~2 min
"""

import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from absl import app  # noqa: E402
from absl import flags  # noqa: E402

try:  # as a script (benchmarks/ on sys.path) or as benchmarks.accuracy_study
    import bench_models
    import bench_utils
except ImportError:  # pragma: no cover
    from benchmarks import bench_models
    from benchmarks import bench_utils

bench_utils.add_examples_to_path()

import example_data  # noqa: E402
import example_recipes  # noqa: E402
import example_training  # noqa: E402

import lrpet_tf  # noqa: E402
from lrpet_tf import keras  # noqa: E402
from lrpet_tf import svd_training  # noqa: E402

__all__ = [
    "METHODS",
    "Method",
    "Run",
    "StudyConfig",
    "aggregate",
    "at_equal_macs",
    "next_run",
    "run",
    "runs_due",
]

NAME = "accuracy_study"
DENSE_MODEL = os.path.join(bench_utils.SAVED_MODELS_DIR, "fashion_mnist_resnet20_dense.keras")
STEM = "stem"

# The study's training recipes (examples/example_recipes.py), by the name the methods use.
RECIPES = {
    # The LRPET paper's optimizer (SGD 0.1, momentum 0.9, coupled L2 1e-4) with a
    # cosine schedule, which reaches a converged model in far fewer epochs than
    # the paper's steps at 50%/75% of 400.
    "sgd": example_recipes.get_recipe("paper", schedule="cosine", augment="crop_flip"),
    # Fine-tuning a trained model: the same at a tenth of the rate.
    "finetune": example_recipes.get_recipe("finetune", augment="crop_flip"),
    # The SVD-training code's released recipe (yanghr/SVD_Prune_EDLCV,
    # cifar10_resnet20): Adam 1e-3, no weight decay, x0.1 at epochs 81 and 122
    # of 164, scaled to each stage's epochs.
    "svd_released": example_recipes.get_recipe("svd_paper", augment="crop_flip"),
    # ... at a tenth of the rate, for starting from a trained model.
    "svd_finetune": example_recipes.get_recipe(
        "svd_paper", learning_rate=1e-4, augment="crop_flip"
    ),
}


@dataclasses.dataclass(frozen=True)
class Method:
    """One row kind of the study.

    Attributes:
        name: Short name (run names start with it).
        label: Table label.
        scenario: `"dense"` (reference), `"A"` (from scratch) or `"B"`
            (from the trained dense model).
        role: `"reference"`, `"lrpet"` (the paper-default LRPET of its
            scenario), `"variant"` (an LRPET variant that may be the
            recommended path), `"allocation"` (lrpet_tf's rank allocation
            without LRPET's projection: truncated SVD at `allocate_ranks`
            ranks, then fine-tuning), `"ablation"`, `"baseline"` (a published
            method) or `"trap"`.
    """

    name: str
    label: str
    scenario: str
    role: str


METHODS = {
    m.name: m
    for m in (
        Method("dense", "dense, E epochs", "dense", "reference"),
        Method("dense_2x", "dense, 2E epochs (convergence check)", "dense", "reference"),
        Method("lrpet", "LRPET, paper defaults", "A", "lrpet"),
        Method("lrpet_ramp", "LRPET + rank ramp", "A", "variant"),
        Method("lrpet_recal", "LRPET + BN re-estimation", "A", "variant"),
        Method("lrpet_alloc_macs", "LRPET at allocate_ranks ranks, MACs budget", "A", "variant"),
        Method("lrpet_no_et", "LRPET without energy transfer", "A", "ablation"),
        Method("lrpet_no_bnrect", "LRPET without BN rectification", "A", "variant"),
        Method("trp", "TRP-style truncation", "A", "baseline"),
        Method("scratch", "compact architecture from scratch", "A", "baseline"),
        Method("svd", "SVD training (released recipe), pruned, fine-tuned", "A", "baseline"),
        Method("lrpet_stem", "LRPET with the stem projected (trap)", "A", "trap"),
        Method("ft_lrpet", "LRPET fine-tuning, paper defaults", "B", "lrpet"),
        Method("ft_lrpet_ramp", "LRPET fine-tuning + rank ramp", "B", "variant"),
        Method("ft_lrpet_recal", "LRPET fine-tuning + BN re-estimation", "B", "variant"),
        Method("ft_lrpet_no_bnrect", "LRPET fine-tuning without BN rectification", "B", "variant"),
        Method(
            "ft_lrpet_alloc_macs",
            "LRPET fine-tuning at allocate_ranks ranks, MACs budget",
            "B",
            "variant",
        ),
        Method(
            "ft_lrpet_trunc_first",
            "LRPET fine-tuning from the truncated model (projected before epoch 1)",
            "B",
            "ablation",
        ),
        Method("ft_tsvd", "truncated SVD, then fine-tuning", "B", "baseline"),
        Method(
            "ft_tsvd_alloc",
            "truncated SVD at allocate_ranks ranks, parameter budget, fine-tuning",
            "B",
            "allocation",
        ),
        Method(
            "ft_tsvd_alloc_macs",
            "truncated SVD at allocate_ranks ranks, MACs budget, fine-tuning",
            "B",
            "allocation",
        ),
        Method("ft_svd", "SVD training from the dense model, pruned, fine-tuned", "B", "baseline"),
    )
}


@dataclasses.dataclass(frozen=True)
class Run:
    """One run: a method at a prune ratio (None for dense) and a seed."""

    method: str
    level: float
    seed: int

    @property
    def name(self):
        level = "" if self.level is None else f"_g{self.level:g}"
        return f"{self.method}{level}_s{self.seed}"


@dataclasses.dataclass
class StudyConfig:
    """The study's data, model, budget, methods and folders.

    Attributes:
        dataset: `"fashion_mnist"` or `"digits"` (smoke runs).
        train_images: First N training images of every run (None: all).
        blocks, width: ResNet of depth `6 * blocks + 2` and first-stage width.
        batch_size: Batch size of every run.
        epochs: E, the from-scratch budget of every scenario-A run.
        finetune_epochs: F, the budget of every scenario-B run.
        levels: Prune ratios g.
        seeds: Seeds; the first runs everything, the others the rows that
            are compared (see the module docstring).
        methods: Method names to run (default: all).
        allocation_images: Training images `allocate_ranks` measures on.
        svd_sparsity_weight: lambda_s (Hoyer) of SVD training's sparsity stage.
        runs_dir: Run folders (models, backups); not committed.
        results_dir: Result files (committed).
        plot_dir: The plot.
        dense_model: Scenario B's starting model (written from `dense` seed
            0 when it finishes).
        command: The command line, for the report.
    """

    dataset: str = "fashion_mnist"
    train_images: int = 10_000
    blocks: int = 3
    width: int = 16
    batch_size: int = 128
    epochs: int = 60
    finetune_epochs: int = 15
    levels: tuple = (0.5, 0.75)
    seeds: tuple = (0, 1, 2)
    methods: tuple = tuple(METHODS)
    allocation_images: int = 3000
    svd_sparsity_weight: float = 0.1
    runs_dir: str = os.path.join(bench_utils.SAVED_MODELS_DIR, NAME)
    results_dir: str = os.path.join(bench_utils.BENCHMARKS_DIR, "results")
    plot_dir: str = os.path.join(bench_utils.BENCHMARKS_DIR, "plots")
    dense_model: str = DENSE_MODEL
    command: str = "PYTHONPATH=. python benchmarks/accuracy_study.py"

    def __post_init__(self):
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"Expected `methods` in {tuple(METHODS)}. Received: {unknown}")
        if not self.seeds:
            raise ValueError("Expected at least one seed. Received: seeds=()")

    @property
    def ramp_epochs(self):
        """Ramp length from scratch (a third of E) and when fine-tuning (half of F)."""
        return max(1, self.epochs // 3), max(1, self.finetune_epochs // 2)

    def json_dir(self):
        return os.path.join(self.results_dir, NAME)


def smoke_config(output_dir):
    """Every method once on the 8x8 digits with a width-4 ResNet-8, 3 epochs."""
    return StudyConfig(
        dataset="digits",
        train_images=None,
        blocks=1,
        width=4,
        batch_size=64,
        epochs=3,
        finetune_epochs=2,
        levels=(0.5,),
        seeds=(0,),
        allocation_images=64,
        runs_dir=os.path.join(output_dir, "runs"),
        results_dir=output_dir,
        plot_dir=output_dir,
        dense_model=os.path.join(output_dir, "dense.keras"),
        command="PYTHONPATH=. python benchmarks/accuracy_study.py --smoke",
    )


# -- which runs, in which order ----------------------------------------------


PAPER_LRPET = {"A": "lrpet", "B": "ft_lrpet"}


def at_equal_macs(macs, reference_macs):
    """Whether a compact model's MACs are at most the uniform-g models' (1% slack).

    The ranking compares methods at equal MACs. Rows at `allocate_ranks`
    ranks spend g's parameter count, which buys more MACs than uniform g
    (1.27x instead of 1.78x fewer at g = 0.5): they are reported, not ranked.
    """
    return macs <= 1.01 * reference_macs


def _best(study, results, scenario, role, level):
    """The method of `role` in `scenario` with the best seed-0 accuracy at `level`.

    Only methods at equal MACs (`at_equal_macs` of the paper-default LRPET
    run) compete; None until every candidate and that run have finished.
    The paper-default run's BN re-estimation is no candidate: it gets every
    seed with that run, so the later seeds go to a trained variant.
    """
    derived = f"{PAPER_LRPET[scenario]}_recal"
    candidates = [
        m.name
        for m in METHODS.values()
        if m.scenario == scenario
        and m.role == role
        and m.name in study.methods
        and m.name != derived
    ]
    seed0 = {
        m: results[Run(m, level, study.seeds[0]).name]
        for m in candidates + [PAPER_LRPET[scenario]]
        if Run(m, level, study.seeds[0]).name in results
    }
    if not candidates or len(seed0) < len(candidates) + 1:
        return None  # not every candidate has its seed-0 run yet
    reference = seed0[PAPER_LRPET[scenario]]["macs"]
    finished = {
        m: seed0[m]["accuracy"] for m in candidates if at_equal_macs(seed0[m]["macs"], reference)
    }
    return max(finished, key=finished.get) if finished else None


def runs_due(study, results):
    """Every run of the study in execution order, given the finished `results`.

    The later seeds' rows depend on the seed-0 results (best variant and best
    baseline per scenario and g), so the list grows as runs finish.

    Args:
        study: The `StudyConfig`.
        results: Run name -> summary of the finished runs.

    Returns:
        A list of `Run`, finished ones included.
    """
    first, later = study.seeds[0], study.seeds[1:]
    wanted = []

    def add(method, level, seed):
        if method in study.methods:
            wanted.append(Run(method, level, seed))

    def more_seeds(scenario, lrpet):
        """Later seeds of the paper-default LRPET and the best variant, allocation and baseline.

        The paper-default run's BN re-estimation comes with it at every seed:
        it trains nothing, and it is the row the issue pairs with LRPET.
        """
        chosen = {}
        for level in study.levels:
            chosen[level] = [lrpet, f"{lrpet}_recal"]
            for role in ("variant", "allocation", "baseline"):
                best = _best(study, results, scenario, role, level)
                if best is not None:
                    chosen[level].append(best)
        # Seed 1 at every g before seed 2: two seeds everywhere tell more than three at one g.
        for seed in later:
            for level in study.levels:
                for method in chosen[level]:
                    if method.endswith("_recal"):
                        add(method[: -len("_recal")], level, seed)
                    add(method, level, seed)

    add("dense", None, first)
    add("dense_2x", None, first)
    # Scenario B first, a quarter of the epochs each: its seed-0 table, then
    # its later seeds, so scenario B is answered within a few sittings.
    for level in study.levels:
        for method in ("ft_lrpet", "ft_lrpet_recal", "ft_lrpet_ramp", "ft_tsvd"):
            add(method, level, first)
        for method in ("ft_tsvd_alloc", "ft_svd", "ft_lrpet_no_bnrect"):
            add(method, level, first)
    for level in study.levels:  # added after the rows above had run
        for method in ("ft_tsvd_alloc_macs", "ft_lrpet_alloc_macs"):
            add(method, level, first)
    more_seeds("B", PAPER_LRPET["B"])
    # Why LRPET fine-tuning trails truncation + fine-tuning (RESULTS.md): the
    # same LRPET run started from the truncated model, F epochs per g.
    for level in study.levels:
        add("ft_lrpet_trunc_first", level, first)
    # Scenario A: what the ranking needs first (paper LRPET, the baselines, the
    # variants; then the compared rows' later seeds, then dense's, which only
    # the "within 0.5 points of dense" part of the bar reads), the explanatory
    # rows (energy-transfer ablation, the stem trap) last.
    for level in study.levels:
        for method in ("lrpet", "lrpet_recal", "trp", "scratch", "svd"):
            add(method, level, first)
    for level in study.levels:
        for method in ("lrpet_ramp", "lrpet_alloc_macs", "lrpet_no_bnrect"):
            add(method, level, first)
    more_seeds("A", PAPER_LRPET["A"])
    for seed in later:
        add("dense", None, seed)
    for level in study.levels:
        add("lrpet_no_et", level, first)
    add("lrpet_stem", max(study.levels), first)
    seen, ordered = set(), []
    for item in wanted:
        if item.name not in seen:
            seen.add(item.name)
            ordered.append(item)
    return ordered


def next_run(study, results):
    """The first unfinished run of `runs_due`, or None when the study is done."""
    for item in runs_due(study, results):
        if item.name not in results:
            return item
    return None


# -- the runs -----------------------------------------------------------------


class _Context:
    """What the runs of one process share: the study, its data and the dense costs."""

    def __init__(self, study):
        self.study = study
        self.images = example_data.load_dataset(
            study.dataset, train_limit=study.train_images, standardize=True
        )
        self._stages = {}
        dense = self.build(0)
        self.dense_costs = lrpet_tf.model_report(lrpet_tf.fold_batchnorm(dense))

    def build(self, seed):
        """A freshly initialised ResNet (seeded)."""
        keras.utils.set_random_seed(seed)
        return bench_models.cifar_resnet(
            self.study.blocks,
            self.images.input_shape,
            self.images.num_classes,
            width=self.study.width,
            shortcut="zeros",
        )

    def run_dir(self, item):
        return os.path.join(self.study.runs_dir, item.name)

    def fit(self, model, item, recipe, epochs, stage="train", callbacks=()):
        """Trains one stage of `item` (resumable), or loads it when an earlier process finished it.

        The stage's files are laid out by `example_training.fit_or_load`.
        """
        self._stages.setdefault(item.name, []).append(stage)
        return example_training.fit_or_load(
            model,
            self.images,
            RECIPES[recipe],
            epochs,
            self.study.batch_size,
            self.run_dir(item),
            stage,
            callbacks=callbacks,
            seed=item.seed,
            verbose=0,
            validate=False,
        )

    def history(self, item):
        """The run's per-epoch logs, stage by stage in the order this process asked for them."""
        rows = []
        for stage in self._stages.get(item.name, []):
            csv_path = os.path.join(self.run_dir(item), stage, "history.csv")
            for row in example_training.read_history(csv_path):
                row = {k: round(v, 5) for k, v in row.items()}
                rows.append({"stage": stage, **row, "epoch": int(row["epoch"]) + 1})
        return rows

    def lrpet(self, level, project_stem=False, **options):
        return lrpet_tf.LRPET(
            prune_ratio=level, exclude=None if project_stem else [STEM], verbose=0, **options
        )

    def uniform_ranks(self, level):
        callback = self.lrpet(level)
        callback.prepare(self.build(0))
        return dict(callback.ranks)

    def compact_macs(self, level):
        """MACs of the factorized model at g's uniform ranks (the SVD rows' target)."""
        compact = lrpet_tf.factorize(self.build(0), ranks=self.uniform_ranks(level))
        return lrpet_tf.model_report(lrpet_tf.fold_batchnorm(compact)).total_macs

    def allocated_ranks(self, item, extra):
        """The `allocate_ranks` ranks of an `_alloc` run (cached per dense model, g and cost).

        Measured on the dense model the run starts from (scenario B: the
        committed one; scenario A: the `dense` run of the same seed), with
        the budget of g's uniform ranks in parameters, or in MACs for the
        `_alloc_macs` methods. Records the allocation's time in `extra`.
        """
        cost = "macs" if item.method.endswith("_macs") else "params"
        if METHODS[item.method].scenario == "B":
            seed, dense_path = self.study.seeds[0], self.study.dense_model
        else:
            seed, dense_path = item.seed, self.dense_path(item.seed)
        cache = os.path.join(self.study.runs_dir, f"allocation_{cost}_g{item.level:g}_s{seed}.json")
        if os.path.exists(cache):
            with open(cache) as f:
                allocation = json.load(f)
        else:
            dense = example_training.load_model(dense_path)
            callback = self.lrpet(item.level)
            callback.prepare(dense)
            n = self.study.allocation_images
            start = time.perf_counter()
            ranks = lrpet_tf.allocate_ranks(
                dense,
                self.images.x_train[:n],
                self.images.y_train[:n],
                callback,
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                cost=cost,
            )
            seconds = time.perf_counter() - start
            allocation = {"ranks": ranks, "seconds": seconds, "images": n, "cost": cost}
            os.makedirs(self.study.runs_dir, exist_ok=True)
            with open(cache, "w") as f:
                json.dump(allocation, f, indent=1)
        extra["allocation_seconds"] = allocation["seconds"]
        return allocation["ranks"]

    def recalibration_batches(self, seed):
        """Images for BN re-estimation: one pass of augmented training batches.

        The training distribution (crop + flip): the later layers were trained
        on BN outputs of augmented batches. Un-augmented images shift the
        statistics (a fine-tuned model lost 0.88 points that way, and nothing
        on augmented batches).
        """
        return self.images.train_dataset(500, "crop_flip", seed).map(lambda x, y: x)

    def dense_path(self, seed):
        """The trained dense model of `seed` (of seed 0: the committed copy, in a fresh clone)."""
        path = os.path.join(self.study.runs_dir, Run("dense", None, seed).name, "train.keras")
        if not os.path.exists(path) and seed == self.study.seeds[0]:
            path = self.study.dense_model  # `_publish_dense_model` copied it there
        if not os.path.exists(path):
            raise FileNotFoundError(f"{path} is missing: run dense_s{seed} first.")
        return path


def _train_dense(ctx, item):
    epochs = ctx.study.epochs * (2 if item.method == "dense_2x" else 1)
    model = ctx.fit(ctx.build(item.seed), item, "sgd", epochs)
    if item.method == "dense" and item.seed == ctx.study.seeds[0]:
        _publish_dense_model(ctx, item)
    return lrpet_tf.fold_batchnorm(model), {"epochs": [epochs]}


def _publish_dense_model(ctx, item):
    """Copies scenario B's starting model to `dense_model` (committed with its checksum)."""
    source = os.path.join(ctx.run_dir(item), "train.keras")
    os.makedirs(os.path.dirname(ctx.study.dense_model), exist_ok=True)
    shutil.copyfile(source, ctx.study.dense_model)


_LRPET_OPTIONS = {
    "lrpet": {},
    "lrpet_no_et": {"energy_transfer": None},
    "lrpet_no_bnrect": {"bn_rectification": False},
    "trp": {"energy_transfer": None, "bn_rectification": False},
    "lrpet_stem": {},
    "ft_lrpet_no_bnrect": {"bn_rectification": False},
}


def _lrpet_callback(ctx, item, epochs, ramp_epochs):
    """The LRPET callback of an LRPET run (either scenario), and the run's `extra` so far.

    The method's options (`_LRPET_OPTIONS`), the rank ramp over
    `ramp_epochs` for the `_ramp` methods, `allocate_ranks`' ranks for the
    `_alloc_macs` ones, the stem projected for `lrpet_stem`.
    """
    options = dict(_LRPET_OPTIONS.get(item.method, {}))
    extra = {"epochs": [epochs]}
    if item.method.endswith("_ramp"):
        options["ramp_epochs"] = extra["ramp_epochs"] = ramp_epochs
    if item.method.endswith("_alloc_macs"):
        callback = lrpet_tf.LRPET(ranks=ctx.allocated_ranks(item, extra), verbose=0)
    else:
        callback = ctx.lrpet(item.level, project_stem=item.method == "lrpet_stem", **options)
    return callback, extra


def _lrpet_compact(model, callback):
    """The trained model factorized at the callback's ranks, BN folded."""
    callback.prepare(model)
    return lrpet_tf.fold_batchnorm(lrpet_tf.factorize(model, ranks=dict(callback.ranks)))


def _train_lrpet(ctx, item):
    callback, extra = _lrpet_callback(ctx, item, ctx.study.epochs, ctx.study.ramp_epochs[0])
    model = ctx.fit(ctx.build(item.seed), item, "sgd", ctx.study.epochs, callbacks=[callback])
    return _lrpet_compact(model, callback), extra


def _recalibrated(ctx, item, source_method):
    """BN re-estimation applied to the trained model of the `source_method` run."""
    source = Run(source_method, item.level, item.seed)
    path = os.path.join(ctx.run_dir(source), "train.keras")
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: run {source.name} first.")
    model = example_training.load_model(path)
    start = time.perf_counter()
    changes = lrpet_tf.recalibrate_batchnorm(model, ctx.recalibration_batches(item.seed))
    seconds = time.perf_counter() - start
    ranks = ctx.uniform_ranks(item.level)
    compact = lrpet_tf.factorize(model, ranks=ranks)
    largest = max(changes.values(), key=lambda c: c["mean"] + c["variance"])
    extra = {"recalibration_seconds": seconds, "largest_relative_change": largest}
    return lrpet_tf.fold_batchnorm(compact), extra


def _train_scratch(ctx, item):
    ranks = ctx.uniform_ranks(item.level)
    compact = lrpet_tf.factorize(ctx.build(item.seed), ranks=ranks)
    model = ctx.fit(compact, item, "sgd", ctx.study.epochs)
    return lrpet_tf.fold_batchnorm(model), {"epochs": [ctx.study.epochs]}


def _svd_training(ctx, item, start, recipe, epochs):
    """SVD training's stages from `start` (decomposed): sparsity, prune to MACs, fine-tune.

    `epochs` is the list of stage lengths: (orthogonality only, + sparsity,
    fine-tune) from scratch, or (+ sparsity, fine-tune) from a trained model.
    """
    model = start
    stages = ["decomposed", "sparsity", "finetune"][-len(epochs) :]
    for stage, stage_epochs in zip(stages[:-1], epochs[:-1]):
        weight = ctx.study.svd_sparsity_weight if stage == "sparsity" else 0.0
        svd_training.set_regularization(model, sparsity_weight=weight)
        model = ctx.fit(model, item, recipe, stage_epochs, stage=stage)
    target = ctx.compact_macs(item.level)
    pruned = svd_training.prune(model, macs=target)
    svd_training.set_regularization(pruned, sparsity_weight=0.0)
    model = ctx.fit(pruned, item, recipe, epochs[-1], stage=stages[-1])
    compact = lrpet_tf.fold_batchnorm(lrpet_tf.factorize(model))
    return compact, {"epochs": list(epochs), "macs_target": target}


def _svd_model(model, init):
    return svd_training.decompose(
        model,
        scheme="channel",
        orthogonality=1.0,
        sparsity="hoyer",
        sparsity_weight=0.0,
        init=init,
        exclude=[STEM],
    )


def _train_svd(ctx, item):
    e = ctx.study.epochs
    epochs = [e - 2 * (e // 3), e // 3, e // 3]
    start = _svd_model(ctx.build(item.seed), "random")
    return _svd_training(ctx, item, start, "svd_released", epochs)


def _dense_start(ctx):
    if not os.path.exists(ctx.study.dense_model):
        raise FileNotFoundError(f"{ctx.study.dense_model} is missing: run dense_s0 first.")
    return example_training.load_model(ctx.study.dense_model)


def _finetune_lrpet(ctx, item):
    epochs = ctx.study.finetune_epochs
    callback, extra = _lrpet_callback(ctx, item, epochs, ctx.study.ramp_epochs[1])
    start = _dense_start(ctx)
    if item.method == "ft_lrpet_trunc_first":
        # Plain truncation before the first epoch: the start of truncated SVD
        # + fine-tuning, then LRPET's paper-default epochs from there.
        truncation = ctx.lrpet(item.level, energy_transfer=None, bn_rectification=False)
        truncation.set_model(start)
        kept = truncation.project().energy_kept
        extra["truncation_energy_kept"] = float(np.mean(list(kept.values())))
    model = ctx.fit(start, item, "finetune", epochs, callbacks=[callback])
    return _lrpet_compact(model, callback), extra


def _finetune_tsvd(ctx, item):
    extra = {"epochs": [ctx.study.finetune_epochs]}
    if item.method in ("ft_tsvd_alloc", "ft_tsvd_alloc_macs"):
        ranks = ctx.allocated_ranks(item, extra)
    else:
        ranks = ctx.uniform_ranks(item.level)
    compact = lrpet_tf.factorize(_dense_start(ctx), ranks=ranks)
    model = ctx.fit(compact, item, "finetune", ctx.study.finetune_epochs)
    return lrpet_tf.fold_batchnorm(model), extra


def _finetune_svd(ctx, item):
    f = ctx.study.finetune_epochs
    start = _svd_model(_dense_start(ctx), "svd")
    return _svd_training(ctx, item, start, "svd_finetune", [f - f // 2, f // 2])


_RUNNERS = {
    "dense": _train_dense,
    "dense_2x": _train_dense,
    "lrpet_recal": lambda ctx, item: _recalibrated(ctx, item, "lrpet"),
    "ft_lrpet_recal": lambda ctx, item: _recalibrated(ctx, item, "ft_lrpet"),
    "scratch": _train_scratch,
    "svd": _train_svd,
    "ft_lrpet": _finetune_lrpet,
    "ft_lrpet_ramp": _finetune_lrpet,
    "ft_lrpet_no_bnrect": _finetune_lrpet,
    "ft_lrpet_trunc_first": _finetune_lrpet,
    "ft_tsvd": _finetune_tsvd,
    "ft_tsvd_alloc": _finetune_tsvd,
    "ft_tsvd_alloc_macs": _finetune_tsvd,
    "ft_lrpet_alloc_macs": _finetune_lrpet,
    "ft_svd": _finetune_svd,
}


_START_VARIANTS = (
    ("LRPET (energy transfer + BN rectification)", {}),
    ("without energy transfer", {"energy_transfer": None}),
    ("without BN rectification", {"bn_rectification": False}),
    ("plain truncation (neither)", {"energy_transfer": None, "bn_rectification": False}),
)


def start_path(study):
    return os.path.join(study.json_dir(), "start", "projection_start.json")


def projection_start(ctx):
    """Scenario B's starting point: the dense model after one projection, no training.

    For each g and each projection variant: the accuracy of the factorized,
    BN-folded model as projected, and after BN re-estimation (one pass of
    augmented training batches, seed 0), which takes stale BN statistics
    out of the comparison. Written once to `start_path`.
    """
    rows = []
    batches = ctx.recalibration_batches(0)
    for level in ctx.study.levels:
        for label, options in _START_VARIANTS:
            keras.backend.clear_session()
            model = _dense_start(ctx)
            callback = ctx.lrpet(level, **options)
            callback.set_model(model)
            callback.project()
            ranks = dict(callback.ranks)

            def accuracy(model=model, ranks=ranks):  # of a copy: factorize returns a new model
                compact = lrpet_tf.factorize(model, ranks=ranks)
                return example_training.accuracy(lrpet_tf.fold_batchnorm(compact), ctx.images)

            row = {"level": level, "variant": label, "projected": accuracy()}
            lrpet_tf.recalibrate_batchnorm(model, batches)  # in place
            row["recalibrated"] = accuracy()
            rows.append(row)
    os.makedirs(os.path.dirname(start_path(ctx.study)), exist_ok=True)
    with open(start_path(ctx.study), "w") as f:
        json.dump({"rows": rows}, f, indent=1)
        f.write("\n")
    return rows


def _start_table(study):
    if not os.path.exists(start_path(study)):
        return []
    with open(start_path(study)) as f:
        rows = json.load(f)["rows"]
    table = [
        [
            row["variant"],
            f"{row['level']:g}",
            f"{100 * row['projected']:.2f}",
            f"{100 * row['recalibrated']:.2f}",
        ]
        for row in rows
    ]
    headers = ["one projection of the dense model", "g", "test acc. %", "after BN re-estimation"]
    return [
        "Scenario B's start, before any fine-tuning (LRPET's projection options; plain "
        "truncation is where truncated SVD + fine-tuning starts):",
        "",
        bench_utils.markdown_table(headers, table),
        "",
    ]


def run_one(ctx, item):
    """Trains (or derives) one run, evaluates its compact model and writes its JSON."""
    start = time.perf_counter()
    keras.backend.clear_session()
    runner = _RUNNERS.get(item.method, _train_lrpet)
    compact, extra = runner(ctx, item)
    costs = lrpet_tf.model_report(compact)
    method = METHODS[item.method]
    summary = {
        "run": item.name,
        "method": item.method,
        "label": method.label,
        "scenario": method.scenario,
        "role": method.role,
        "level": item.level,
        "seed": item.seed,
        "accuracy": example_training.accuracy(compact, ctx.images),
        "macs": int(costs.total_macs),
        "params": int(costs.total_params),
        "dense_macs": int(ctx.dense_costs.total_macs),
        "dense_params": int(ctx.dense_costs.total_params),
        "ranks": {
            row.name[: -len("_reduce")]: int(row.kernel_shape[-1])
            for row in costs.layers
            if row.name.endswith("_reduce")
        },
        "train_images": int(len(ctx.images.x_train)),
        "test_images": int(len(ctx.images.x_test)),
        "seconds_this_process": time.perf_counter() - start,
        "finished": bench_utils.machine_info()["date"],
        "load_average": bench_utils.load_average(),
        "history": ctx.history(item),
        **extra,
    }
    os.makedirs(ctx.study.json_dir(), exist_ok=True)
    with open(os.path.join(ctx.study.json_dir(), f"{item.name}.json"), "w") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    return summary


def load_results(study):
    """Run name -> summary of every finished run (from the JSON files)."""
    results = {}
    folder = study.json_dir()
    if os.path.isdir(folder):
        for name in sorted(os.listdir(folder)):
            if name.endswith(".json"):
                with open(os.path.join(folder, name)) as f:
                    summary = json.load(f)
                results[summary["run"]] = summary
    return results


# -- the report ---------------------------------------------------------------


def _grouped(results):
    """(method, g) -> its runs' summaries by seed, in the report's row order (g, then METHODS)."""
    groups = {}
    for summary in results.values():
        groups.setdefault((summary["method"], summary["level"]), []).append(summary)
    order = {name: i for i, name in enumerate(METHODS)}
    return {
        key: sorted(members, key=lambda s: s["seed"])
        for key, members in sorted(
            groups.items(), key=lambda kv: (kv[0][1] or 0.0, order[kv[0][0]])
        )
    }


def aggregate(results):
    """One row per (method, g) over seeds: mean and sample sd of the accuracy (%)."""
    rows = []
    for (method, level), members in _grouped(results).items():
        accuracies = np.array([100 * s["accuracy"] for s in members])
        rows.append(
            {
                "method": method,
                "label": METHODS[method].label,
                "scenario": METHODS[method].scenario,
                "role": METHODS[method].role,
                "level": level,
                "seeds": [s["seed"] for s in members],
                "per_seed": [float(a) for a in accuracies],
                "accuracy": float(accuracies.mean()),
                "sd": float(accuracies.std(ddof=1)) if len(members) > 1 else None,
                "macs": int(np.mean([s["macs"] for s in members])),
                "macs_ratio": float(np.mean([s["dense_macs"] / s["macs"] for s in members])),
                "params": int(np.mean([s["params"] for s in members])),
            }
        )
    return rows


def _cell(row):
    text = f"{row['accuracy']:.2f}"
    if row["sd"] is not None:
        text += f" ± {row['sd']:.2f} (" + ", ".join(f"{a:.2f}" for a in row["per_seed"]) + ")"
    return text


def compare(a, b):
    """`a` minus `b` in points, and whether it exceeds the seed spread.

    It exceeds the spread when both rows have several seeds and the
    intervals mean ± sd do not overlap.
    """
    delta = a["accuracy"] - b["accuracy"]
    if a["sd"] is None or b["sd"] is None:
        return delta, None
    return delta, abs(delta) > a["sd"] + b["sd"]


def render(study, results):
    """The markdown of the study: budget, convergence, one table per scenario, comparisons."""
    rows = aggregate(results)
    by_key = {(r["method"], r["level"]): r for r in rows}
    lines = [
        f"## Accuracy study: ResNet-{6 * study.blocks + 2} on {study.dataset}",
        "",
        f"Command: `{study.command}`",
        "",
        _budget_text(study, results),
        "",
    ]
    dense_2x = by_key.get(("dense_2x", None))
    first = [s for s in results.values() if s["run"] == Run("dense", None, study.seeds[0]).name]
    if first:
        base = 100 * first[0]["accuracy"]
        text = f"Dense, seed {study.seeds[0]}: {base:.2f}% in E = {study.epochs} epochs"
        if dense_2x:
            change = dense_2x["accuracy"] - base
            verdict = "converged" if abs(change) < 0.3 else "NOT converged"
            text += (
                f" and {dense_2x['accuracy']:.2f}% in 2E = {2 * study.epochs} "
                f"({change:+.2f} points: {verdict}, the bar is 0.3)"
            )
        else:
            text += f"; the 2E = {2 * study.epochs} check is pending"
        lines += [f"Convergence: {text}.", ""]
    headers = ["method", "g", "test acc. % (mean ± sd (seeds))", "vs dense", "MACs", "MACs ratio"]
    headers += ["params"]
    for scenario, title in (
        ("A", "Scenario A, from scratch"),
        ("B", "Scenario B, from the trained dense model"),
    ):
        reference = _dense_reference(study, results, scenario)
        table = [] if reference is None else [_table_row(reference, None)]
        for row in rows:
            if row["scenario"] != scenario:
                continue
            table.append(_table_row(row, reference))
        if len(table) > (1 if reference else 0):
            lines += [f"### {title}", "", bench_utils.markdown_table(headers, table), ""]
            lines += _comparisons(study, results, by_key, scenario, reference)
            lines += _fit_table(results, scenario)
            if scenario == "B":
                lines += _start_table(study)
    lines.append(_plot_note(study))
    return "\n".join(lines)


def _fit_table(results, scenario):
    """How well each row's training fits its training data, from the runs' epoch histories.

    Training accuracy on the augmented batches as Keras reports it for the
    epoch (LRPET's weights before that epoch's projection), mean over seeds:
    after epochs 1 and 2 of the first stage and in the last epoch. A row that
    trails another in test accuracy and in training accuracy alike is held
    back by its optimization, not by overfitting. LRPET rows also give the
    energy their first projection kept.
    """
    trained = {
        name: summary
        for name, summary in results.items()
        if summary["scenario"] == scenario and len(summary.get("history") or []) >= 2
    }
    table = []
    for (method, level), members in _grouped(trained).items():
        histories = [m["history"] for m in members]
        # The first projection: the truncation before training where there is one.
        energies = [
            m.get("truncation_energy_kept", m["history"][0].get("lrpet_energy_kept"))
            for m in members
        ]
        energies = [e for e in energies if e is not None]
        kept = float(np.mean(energies)) if energies else None
        cells = [np.mean([100 * h[i]["accuracy"] for h in histories]) for i in (0, 1, -1)]
        cells.append(np.mean([100 * m["accuracy"] for m in members]))
        table.append(
            [METHODS[method].label, f"{level:g}", str(len(members))]
            + [f"{c:.2f}" for c in cells]
            + ["" if kept is None else f"{kept:.3f}"]
        )
    if not table:
        return []
    headers = [
        "method",
        "g",
        "seeds",
        "train acc. %, epoch 1",
        "epoch 2",
        "last epoch",
        "test acc. %",
        "energy kept by the first projection",
    ]
    return [
        "How the rows fit their training data (accuracy on the augmented training batches "
        "during the epoch, LRPET's weights before that epoch's projection; mean over seeds; "
        "the BN re-estimation rows train nothing and are left out):",
        "",
        bench_utils.markdown_table(headers, table),
        "",
    ]


def _dense_reference(study, results, scenario):
    """Dense's row for `scenario`: every seed for A; for B the seed-0 model every run starts from.

    Scenario B's seeds differ in fine-tuning only, so its runs are set
    against the model they start from, not dense's mean over seeds.
    """
    first = Run("dense", None, study.seeds[0]).name
    members = {n: s for n, s in results.items() if s["method"] == "dense"}
    if scenario == "B":
        members = {n: s for n, s in members.items() if n == first}
    if not members:
        return None
    (row,) = aggregate(members)
    if scenario == "B":
        row["label"] = f"dense, E epochs, seed {study.seeds[0]} (every run's start)"
    return row


def _table_row(row, reference):
    """One table row; `reference` is the dense row it is compared with (None: it is dense)."""
    delta = "-" if reference is None else f"{row['accuracy'] - reference['accuracy']:+.2f}"
    return [
        row["label"],
        "-" if row["level"] is None else f"{row['level']:g}",
        _cell(row),
        delta,
        f"{row['macs']:,}",
        f"{row['macs_ratio']:.2f}x",
        f"{row['params']:,}",
    ]


def _versus(a, b):
    """`a - b` in points and whether that exceeds the seed spread, as text."""
    delta, exceeds = compare(a, b)
    verdict = {
        None: "seeds pending",
        True: "exceeds the seed spread",
        False: "within the seed spread",
    }
    return f"{delta:+.2f} points, {verdict[exceeds]}"


def _compared(study, results, by_key, scenario, level):
    """The rows a comparison at `level` uses, by role, and the unranked ones.

    Each role's row is the one `_best` chose by seed 0, the one that gets the
    later seeds, so a runner-up with one seed never displaces a row whose
    mean has three. Until `_best` can choose (a candidate's seed-0 run is
    missing), the best mean at equal MACs stands in. `"path"` is the better
    of the paper-default LRPET and its best variant.
    """
    paper = by_key.get((PAPER_LRPET[scenario], level))
    if paper is None:
        return None
    here = [r for r in by_key.values() if r["scenario"] == scenario and r["level"] == level]
    chosen = {"lrpet": paper}
    for role in ("variant", "allocation", "baseline"):
        name = _best(study, results, scenario, role, level)
        candidates = [
            r
            for r in here
            if r["role"] == role
            and at_equal_macs(r["macs"], paper["macs"])
            and (name is None or r["method"] == name)
        ]
        chosen[role] = max(candidates, key=lambda r: r["accuracy"]) if candidates else None
    paths = [r for r in (paper, chosen["variant"]) if r is not None]
    chosen["path"] = max(paths, key=lambda r: r["accuracy"])
    chosen["unequal"] = [r for r in here if not at_equal_macs(r["macs"], paper["macs"])]
    # Rows the seed-0 choice passed over that ended above the row compared for
    # their role (its later seeds came out lower): the reader should see them.
    chosen["above"] = {
        side: [
            r
            for r in here
            if r["role"] in roles
            and r is not compared
            and at_equal_macs(r["macs"], paper["macs"])
            and r["accuracy"] > compared["accuracy"]
        ]
        for side, roles, compared in (
            ("path", ("lrpet", "variant"), chosen["path"]),
            ("baseline", ("baseline",), chosen["baseline"]),
        )
        if compared is not None
    }
    return chosen


def _comparisons(study, results, by_key, scenario, dense):
    """Per g: the best LRPET path, paper defaults and allocation vs the best baseline; the bar."""
    lines, at_level = [], {}
    for level in study.levels:
        chosen = _compared(study, results, by_key, scenario, level)
        if chosen is None or chosen["baseline"] is None:
            continue
        at_level[level] = chosen
        path, paper, baseline = chosen["path"], chosen["lrpet"], chosen["baseline"]
        line = (
            f"- g = {level:g}: best LRPET path ({path['label']}, {path['accuracy']:.2f}%) "
            f"vs best baseline ({baseline['label']}, {baseline['accuracy']:.2f}%): "
            f"{_versus(path, baseline)}."
        )
        if path is not paper:
            line += f" Paper defaults ({paper['accuracy']:.2f}%): {_versus(paper, baseline)}."
        allocation = chosen["allocation"]
        if allocation is not None:
            line += (
                f" lrpet_tf's rank allocation without LRPET's projection ({allocation['label']}, "
                f"{allocation['accuracy']:.2f}%): {_versus(allocation, baseline)} vs the best "
                f"baseline, {_versus(allocation, path)} vs the best LRPET path."
            )
        for side, rows in chosen["above"].items():
            compared = chosen[side]
            for fewer in (True, False):
                group = [r for r in rows if (len(r["seeds"]) < len(compared["seeds"])) == fewer]
                if group:
                    line += (
                        f" Above the compared {'LRPET path' if side == 'path' else 'baseline'} "
                        + (
                            "on fewer seeds (passed over by seed 0): "
                            if fewer
                            else "with as many seeds: "
                        )
                        + "; ".join(
                            f"{r['label']} ({r['accuracy']:.2f}%, {_seeds_text(r)})" for r in group
                        )
                        + "."
                    )
        if chosen["unequal"]:
            line += (
                " Not ranked, more MACs than uniform g: "
                + "; ".join(
                    f"{r['label']} ({r['accuracy']:.2f}% at {r['macs_ratio']:.2f}x)"
                    for r in chosen["unequal"]
                )
                + "."
            )
        lines.append(line)
    if at_level and dense is not None:
        # Scenario B's reference is one model (its start): no seeds to wait for.
        lines.append(_bar(at_level, dense, dense_final=scenario == "B" or dense["sd"] is not None))
    return lines + [""] if lines else []


def _seeds_text(row):
    count = len(row["seeds"])
    return f"{count} seed{'' if count == 1 else 's'}"


def _all(states):
    """Several parts as one: False if any failed, else None if any is pending, else True."""
    return False if False in states else (None if None in states else True)


_STATE = {True: "met", False: "not met", None: "pending"}


def _bar(at_level, dense, dense_final):
    """The issue's bar for one scenario, with its two parts: met, not met or pending.

    An LRPET path must beat the best baseline by more than the seed spread at
    every g, and stay within 0.5 points of dense at a g with >= 2x fewer
    MACs. A part is pending while a row it needs has one seed (dense too,
    unless `dense_final`).
    """
    ahead, ahead_states = [], []
    for level, chosen in at_level.items():
        delta, exceeds = compare(chosen["path"], chosen["baseline"])
        ahead_states.append(None if exceeds is None else bool(exceeds and delta > 0))
        ahead.append(f"g = {level:g}, {_versus(chosen['path'], chosen['baseline'])}")
    near, near_states = [], []
    for level, chosen in at_level.items():
        path = chosen["path"]
        if path["macs_ratio"] >= 2.0:
            delta = path["accuracy"] - dense["accuracy"]
            near_states.append(None if path["sd"] is None or not dense_final else delta >= -0.5)
            near.append(f"g = {level:g} ({path['macs_ratio']:.2f}x), {delta:+.2f} points")
    if not near:
        near, near_states = ["no g reaches 2x fewer MACs"], [False]
    near_state = True if True in near_states else _all(near_states)
    parts = (_all(ahead_states), near_state)
    return (
        f"- The issue's bar: an LRPET path ahead of the best baseline by more than the seed "
        f"spread at every g ({'; '.join(ahead)}): {_STATE[parts[0]]}; within 0.5 points of "
        f"dense at >= 2x fewer MACs ({'; '.join(near)}): {_STATE[parts[1]]}. "
        f"**Bar {_STATE[_all(parts)]}.**"
    )


def run_seconds(summary):
    """Wall time of a run: its finishing process's, or its logged epochs' if longer.

    A run resumed across sittings spent most of its time in earlier
    processes; the sum of its epochs' `epoch_seconds` (one record per stage
    and epoch in `history`) counts them. Runs logged before epoch times were
    recorded have none, and count their finishing process only.
    """
    epochs = sum(row.get("epoch_seconds", 0.0) for row in summary.get("history", []))
    return max(summary["seconds_this_process"], epochs)


def _budget_text(study, results):
    images = next(iter(results.values()))["train_images"] if results else study.train_images
    hours = sum(map(run_seconds, results.values())) / 3600
    f, e = study.finetune_epochs, study.epochs
    return (
        f"Budget: {images:,} training images, batch {study.batch_size}, crop + flip. Dense and "
        f"every scenario-A LRPET/TRP/scratch run: E = {e} epochs of {RECIPES['sgd'].describe()}; "
        f"LRPET projects once per epoch, ramp over {study.ramp_epochs[0]} epochs. SVD training "
        f"from scratch: {e - 2 * (e // 3)} + {e // 3} + {e // 3} epochs (orthogonality; + Hoyer "
        f"lambda_s {study.svd_sparsity_weight:g}; pruned to LRPET's MACs, fine-tuned) of "
        f"{RECIPES['svd_released'].describe()}, restarted per stage. Scenario B: F = {f} epochs "
        f"of {RECIPES['finetune'].describe()} for every method (ramp over "
        f"{study.ramp_epochs[1]}), SVD training {f - f // 2} + {f // 2} epochs of "
        f"{RECIPES['svd_finetune'].describe()}. Accuracy: the factorized, BN-folded compact "
        f"model on all test images; sd: sample standard deviation over seeds. Scenario B's "
        f"seeds share one starting model and differ in fine-tuning only, so its spreads leave "
        f"out the dense model's own seed variance. The rows compared are the best of each "
        f"role by seed 0 (the ones that get more seeds; seed 0 counts in their mean). "
        f"Scenario A's allocated ranks are measured on the trained dense model of the same "
        f"seed: budget beyond E epochs, and in MACs where the issue asked for parameters "
        f"(see the module docstring). Sum of run "
        f"times: {hours:.1f} h (shared 2-core machine; a run that logged no epoch times, "
        f"those before they were logged, counts its finishing process only)."
    )


def _plot_note(study):
    note = f"Plot: `benchmarks/plots/{NAME}_vs_macs.png` (one panel per scenario)."
    model = dense_model_note(study)
    if model is not None:
        note += (
            f" Scenario B's start: `{model['path']}` ({model['bytes']:,} bytes, "
            f"SHA-256 `{model['sha256']}`)."
        )
    return note


def plot(study, results, path):
    """Accuracy against MACs of the compact model, one panel per scenario."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = aggregate(results)
    dense = next((r for r in rows if r["method"] == "dense"), None)
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5), sharey=True)
    colors = plt.get_cmap("tab20").colors
    for ax, scenario, title in zip(
        axes, "AB", ("A: from scratch", "B: from the trained dense model")
    ):
        here = [r for r in rows if r["scenario"] == scenario]
        methods = [m for m in METHODS if any(r["method"] == m for r in here)]
        for i, method in enumerate(methods):
            points = [r for r in here if r["method"] == method]
            ax.errorbar(
                [r["macs"] / 1e6 for r in points],
                [r["accuracy"] for r in points],
                yerr=[r["sd"] or 0.0 for r in points],
                marker="os^vD<>pP*XhH"[i % 13],
                color=colors[(2 * i) % 20 if i < 10 else (2 * i + 1) % 20],
                ms=7,
                capsize=3,
                linestyle="none",
                label=METHODS[method].label,
            )
        if dense:
            ax.axhline(dense["accuracy"], color="0.3", ls="--", lw=1)
            ax.annotate(  # at the top, clear of the points and the legend
                f"dense {dense['accuracy']:.2f}% at {dense['macs'] / 1e6:.1f}M MACs",
                (0.02, 0.98),
                xycoords="axes fraction",
                va="top",
                fontsize=8,
            )
        ax.set_title(title)
        ax.set_xlabel("MACs per image of the compact model (millions)")
        ax.grid(True, alpha=0.3)
        if methods:  # below the panel: inside, it hid points
            ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    axes[0].set_ylabel("test top-1 accuracy (%), mean ± sd over seeds")
    return bench_utils.save_figure(fig, path)


def _write_report(study, results):
    markdown = render(study, results)
    rows = aggregate(results)
    payload = {
        "study": {
            k: v
            for k, v in dataclasses.asdict(study).items()
            if k not in ("runs_dir", "results_dir", "plot_dir", "dense_model")
        },
        "rows": rows,
        "pending": [r.name for r in runs_due(study, results) if r.name not in results],
    }
    bench_utils.write_results(NAME, payload, markdown, study.results_dir)
    if results:
        plot(study, results, os.path.join(study.plot_dir, f"{NAME}_vs_macs.png"))
    _splice_into_results_md(study, markdown)
    return markdown, payload


def _splice_into_results_md(study, markdown):
    """Puts the tables into benchmarks/RESULTS.md section 1 (for the real study only)."""
    if os.path.abspath(study.results_dir) != os.path.join(bench_utils.BENCHMARKS_DIR, "results"):
        return
    path = os.path.join(bench_utils.BENCHMARKS_DIR, "RESULTS.md")
    start, end = "<!-- accuracy-study -->\n", "<!-- /accuracy-study -->"
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if start not in text or end not in text:
        return
    head, rest = text.split(start, 1)
    body = markdown.split("\n", 2)[2].strip()  # without its own title
    text = head + start + body + "\n" + end + rest.split(end, 1)[1]
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)


def dense_model_note(study):
    """Command, accuracy and SHA-256 of scenario B's committed dense model."""
    path = study.dense_model
    if not os.path.exists(path):
        return None
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    inside = os.path.abspath(path).startswith(bench_utils.REPO_DIR + os.sep)
    shown = os.path.relpath(path, bench_utils.REPO_DIR) if inside else os.path.basename(path)
    return {"path": shown, "sha256": digest, "bytes": os.path.getsize(path)}


def run(study=None, report_only=False, max_runs=None, log=print):
    """Runs the study's unfinished runs in order, then writes the tables and plot.

    Args:
        study: A `StudyConfig`.
        report_only: Only rebuild the report from the result files.
        max_runs: Stop after this many runs (None: until done).
        log: Where progress lines go.

    Returns:
        `(markdown, payload)`.
    """
    study = study or StudyConfig()
    results = load_results(study)
    ctx = None
    done = 0
    while not report_only and (max_runs is None or done < max_runs):
        item = next_run(study, results)
        if _start_due(study):
            ctx = ctx or _Context(study)
            log("scenario B's start: one projection of the dense model ...")
            projection_start(ctx)
        if item is None:
            break
        ctx = ctx or _Context(study)
        total = len(runs_due(study, results))
        log(f"[{len(results) + 1}/{total}] {item.name} ...")
        summary = run_one(ctx, item)
        results[item.name] = summary
        done += 1
        log(
            f"    {item.name}: {100 * summary['accuracy']:.2f}% at {summary['macs']:,} MACs "
            f"({summary['seconds_this_process'] / 60:.1f} min)"
        )
        _write_report(study, results)
    return _write_report(study, results)


def _start_due(study):
    methods = {m for m in study.methods if METHODS[m].scenario == "B"}
    return (
        bool(methods)
        and os.path.exists(study.dense_model)
        and not os.path.exists(start_path(study))
    )


FLAGS = flags.FLAGS


def define_flags():
    defaults = StudyConfig()
    flags.DEFINE_bool("smoke", False, "Every method once on the digits, tiny (CI).")
    flags.DEFINE_string("smoke_dir", "/tmp/accuracy_study_smoke", "Output folder of --smoke.")
    flags.DEFINE_bool("report_only", False, "Rebuild tables and plot from the result files.")
    flags.DEFINE_list("methods", list(defaults.methods), "Methods to run.")
    flags.DEFINE_string("runs_dir", defaults.runs_dir, "Run folders (models, backups).")
    flags.DEFINE_string("results_dir", defaults.results_dir, "Result files.")
    flags.DEFINE_string("plot_dir", defaults.plot_dir, "The plot's folder.")
    flags.DEFINE_string("dense_model", defaults.dense_model, "Scenario B's starting model.")
    flags.DEFINE_integer("max_runs", None, "Stop after this many runs.")


def main(argv):
    del argv
    if FLAGS.smoke:
        study = smoke_config(FLAGS.smoke_dir)
    else:
        study = StudyConfig(
            methods=tuple(FLAGS.methods),
            runs_dir=FLAGS.runs_dir,
            results_dir=FLAGS.results_dir,
            plot_dir=FLAGS.plot_dir,
            dense_model=FLAGS.dense_model,
        )
    markdown, payload = run(study, report_only=FLAGS.report_only, max_runs=FLAGS.max_runs)
    print(markdown)
    if payload["pending"]:
        print(f"{len(payload['pending'])} runs pending: {', '.join(payload['pending'])}")


if __name__ == "__main__":
    sys.path.insert(0, bench_utils.REPO_DIR)
    define_flags()
    app.run(main)
