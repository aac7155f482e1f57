"""Lightning's Trainer for an evaluation pass: made from the plan's :class:`~evaluate.plan.RunSpec`
before anything is loaded (an impossible device setting fails fast), and run so that a signal ends
the pass as :class:`~evaluate.runtime.interrupts.Interrupted` (see :mod:`evaluate.runtime.interrupts`)."""

from __future__ import annotations

import importlib.util
import os
import signal
import tempfile
import warnings
from pathlib import Path

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.precision import DoublePrecision, HalfPrecision
from lightning.pytorch.strategies.launchers import _MultiProcessingLauncher
from lightning.pytorch.utilities.exceptions import SIGTERMException

from cvt_port.errors import first_line

from ..runtime.allocation import Allocation, read_allocation, resolve_devices
from ..runtime.interrupts import Interrupted, interruption, lightning_pass
from .memory import OutOfMemory, is_out_of_memory
from ..plan import PlanError, ReportSpec, RunSpec
from ..runtime.progress import progress_bar

DEVICE_FIELDS = ("run.accelerator", "run.devices", "run.num_nodes", "run.strategy", "run.precision")


class _ExceptionRecorder(Callback):
    """Lightning reports the exception that ended a pass to ``on_exception`` before it exits; for
    Ctrl-C that is the only trace left (it then calls ``sys.exit(1)``)."""

    def __init__(self) -> None:
        self.exception: BaseException | None = None

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        self.exception = exception


def make_trainer(spec: RunSpec, report: ReportSpec | None = None) -> L.Trainer:
    """A device/strategy/precision Lightning cannot provide, or one this harness cannot honour, is
    bad input (exit 2), found before anything is loaded; so is a device count that contradicts the processes
    srun or torchrun started (:mod:`evaluate.runtime.allocation`, which also fills in ``devices="auto"``), and a
    logger whose package is missing or whose folder cannot be written."""
    devices, num_nodes = resolve_devices(spec)
    alloc = read_allocation()
    plugins = [SLURMStepEnvironment(alloc)] if alloc is not None and alloc.launcher == "slurm" else []
    loggers = make_loggers(report.loggers, Path(report.log_dir)) if report is not None else []
    try:
        trainer = L.Trainer(
            accelerator=spec.accelerator,
            devices=devices,
            num_nodes=num_nodes,
            strategy=spec.strategy,
            precision=spec.precision,
            logger=loggers or False,
            enable_checkpointing=False,
            enable_model_summary=False,
            use_distributed_sampler=False,  # ShardSampler: every image exactly once
            inference_mode=True,
            callbacks=[_ExceptionRecorder(), progress_bar()],  # progress_bar: images/s and time left
            plugins=plugins or None,
        )
    except Exception as exc:  # MisconfigurationException, ValueError, RuntimeError from Lightning's checks
        raise PlanError(DEVICE_FIELDS, first_line(exc)) from None
    refuse_unsupported(trainer, spec)
    _sigterm_without_collective(trainer)
    _rank_zero_is_this_trainers(trainer)
    return trainer


def _rank_zero_is_this_trainers(trainer: L.Trainer) -> None:
    """Lightning's loggers write through ``rank_zero_only``, whose rank is read from the environment (``RANK``,
    ``SLURM_PROCID``...) once, when Lightning is first imported. Imported later now (a launch is checked before any
    heavy import), it can have read another launch's variables in a long-lived process (the Python API after a
    refused ``srun`` task): a process alone would then log nothing. The Trainer's own rank decides, as it decides
    who writes the reports."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    rank_zero_only.rank = trainer.global_rank


def _sigterm_without_collective(trainer: L.Trainer) -> None:
    """Lightning 2.6's SIGTERM handler calls ``dist.broadcast`` from inside the signal handler, meant to pair with
    the per-step broadcast of its training loop. A validation pass has no such broadcast: on a rank whose
    handler runs while another rank is in a collective of its own (our fault exchange, a metric's sync), or gets
    no signal at all, the two collectives mismatch and the launch hangs. The fault exchange at the end of the pass
    already ends every rank with the signal (:mod:`evaluate.validation.lightning_module`), so the notifier here only sets the
    flag (and stops the processes Lightning itself started, as Lightning's does). Replaced on the instance: the
    connector registers ``self._sigterm_notifier_fn`` when the pass starts."""
    connector = trainer._signal_connector

    def notify(signum, frame) -> None:
        launcher = trainer.strategy.launcher
        if not connector.received_sigterm and launcher is not None:
            launcher.kill(signum)
        connector.received_sigterm = True

    connector._sigterm_notifier_fn = notify


class SLURMStepEnvironment(SLURMEnvironment):
    """Lightning's SLURM environment, sized by the job step this process is a task of (:mod:`evaluate.runtime.allocation`).

    Lightning's own reads the job's ``SLURM_NTASKS_PER_NODE`` (a step ``srun --ntasks=2`` in an ``sbatch
    --ntasks-per-node=4`` job would have to claim ``devices=4``) and ignores SLURM altogether in a job named
    ``bash``/``interactive``, where every task of ``srun bash -c ...`` would then run the whole evaluation alone.
    Given explicitly, this one makes the step's tasks one job in both cases; the checks against the flags were made
    by :func:`evaluate.runtime.allocation.resolve_devices`."""

    def __init__(self, alloc: Allocation):
        self.alloc = alloc
        super().__init__()

    @staticmethod
    def _validate_srun_variables() -> None:  # the step's variables were checked by read_allocation
        return None

    def world_size(self) -> int:
        return self.alloc.world_size

    @property
    def main_address(self) -> str:
        if "MASTER_ADDR" not in os.environ and "SLURM_STEP_NODELIST" in os.environ:  # the step's first node
            os.environ["MASTER_ADDR"] = self.resolve_root_node_address(os.environ["SLURM_STEP_NODELIST"])
        return super().main_address

    def validate_settings(self, num_devices: int, num_nodes: int) -> None:
        if (num_devices, num_nodes) != (self.alloc.per_node, self.alloc.nodes):
            raise ValueError(f"devices={num_devices}, num_nodes={num_nodes} do not match the SLURM step's "
                             f"{self.alloc.per_node} task(s) per node on {self.alloc.nodes} node(s)")


# logger -> (the packages that can serve it, the one to install)
_LOGGER_PACKAGES = {"tensorboard": (("tensorboard", "tensorboardX"), "tensorboardX"), "wandb": (("wandb",), "wandb"),
                    "mlflow": (("mlflow",), "mlflow")}
PROJECT = "cvt-port"  # the wandb project and mlflow experiment


def make_loggers(names: tuple[str, ...], log_dir: Path) -> list:
    """Lightning's loggers for ``names``. Each writes under ``log_dir`` in a folder of its own (``csv/version_N``,
    ``tensorboard/version_N``, ``wandb``, ``mlruns``; wandb's and mlflow's own settings, such as
    ``WANDB_MODE`` and ``MLFLOW_TRACKING_URI``, apply). Not in the reports' folder: that one is a single
    run's, replaced whole when the run ends, while a tracker keeps the history of runs."""
    for name in names:
        packages, install = _LOGGER_PACKAGES.get(name, ((), ""))
        if packages and not any(importlib.util.find_spec(p) for p in packages):
            raise PlanError("report.loggers", f"needs the {install} package: pip install {install}", name)
    if not names:
        return []
    _check_writable(log_dir)
    from lightning.pytorch import loggers as pl_loggers

    made = {
        "csv": lambda: pl_loggers.CSVLogger(log_dir, name="csv"),
        "tensorboard": lambda: pl_loggers.TensorBoardLogger(log_dir, name="tensorboard", default_hp_metric=False),
        "wandb": lambda: pl_loggers.WandbLogger(project=PROJECT, save_dir=str(log_dir)),
        "mlflow": lambda: pl_loggers.MLFlowLogger(experiment_name=PROJECT, save_dir=str(log_dir / "mlruns")),
    }
    return [made[name]() for name in names]


def _check_writable(log_dir: Path) -> None:
    """The loggers write when the pass ends: a folder they cannot write in is found now."""
    from cvt_port.outputs import check_output_folder

    if not log_dir.is_dir():
        check_output_folder(log_dir, "report.log_dir ")
        return
    try:
        Path(tempfile.mkdtemp(prefix=".cvt-port-write-test-", dir=log_dir)).rmdir()
    except OSError as exc:
        raise PlanError("report.log_dir", f"cannot write there ({exc.strerror}); choose a writable folder",
                        log_dir) from None


def refuse_unsupported(trainer: L.Trainer, spec: RunSpec) -> None:
    """Settings Lightning accepts but that would give a wrong or no answer here:

    - ``*-true`` precisions other than 32 (``bf16-true``, ``16-true``, ``64-true``) cast the whole
      module, the original model too: the gate must judge against the original in float32 as
      released (``bf16-mixed``/``16-mixed`` keep it there, outside autocast).
    - strategies that start their processes from inside the Trainer (``ddp_spawn``, ``ddp_fork``,
      ``ddp_notebook``) run the pass in child processes and hand back only logged metrics: the
      per-image predictions and the gate's figures would stay in the children. ``ddp`` (or
      ``torchrun``/``srun``) runs the pass in this process.
    """
    if isinstance(trainer.precision_plugin, (HalfPrecision, DoublePrecision)):
        raise PlanError("run.precision", "would cast the original model too; the gate judges against the "
                        "original in float32: use 32-true, bf16-mixed or 16-mixed", spec.precision)
    if isinstance(trainer.strategy.launcher, _MultiProcessingLauncher):
        raise PlanError("run.strategy", "runs the pass in spawned/forked processes whose results do not come "
                        "back: use ddp (or launch with torchrun/srun)", spec.strategy)


def run_validation(trainer: L.Trainer, module: L.LightningModule, datamodule: L.LightningDataModule) -> dict:
    """``trainer.validate``, with every way a signal can end it turned into :class:`Interrupted`; returns
    the metrics the module logged (what the loggers received)."""
    recorder = next(c for c in trainer.callbacks if isinstance(c, _ExceptionRecorder))
    recorder.exception = None
    with lightning_pass(), warnings.catch_warnings():
        # the module logs figures torchmetrics have already synced, once, with sync_dist=False (no collective)
        warnings.filterwarnings("ignore", message=r".*sync_dist=True.*when logging on epoch level.*")
        try:
            logged = trainer.validate(module, datamodule=datamodule, verbose=False)
        except SIGTERMException:
            raise Interrupted(signal.SIGTERM) from None
        except SystemExit:
            if isinstance(recorder.exception, KeyboardInterrupt):
                raise Interrupted(signal.SIGINT) from None
            raise
        except BaseException as exc:
            # a DataLoader worker killed by the same SIGTERM fails the pass before Lightning's check
            if trainer.received_sigterm:
                raise Interrupted(signal.SIGTERM) from None
            stopped = interruption(exc)  # ... or before this process's own handler ran (evaluate.runtime.interrupts)
            if stopped is not None:
                raise stopped from None
            if is_out_of_memory(exc):  # outside a step (a step's own is a fault): moving the models to the device
                raise OutOfMemory(f"out of memory on {trainer.strategy.root_device} before the first batch, while the "
                                  "models were put on the device: their weights alone do not fit; use a device with "
                                  "more memory, or evaluate fewer models at once (models.with_stock, "
                                  "models.reference)") from None
            raise
        finally:
            from ..runtime import peers

            peers.stop()  # the pass is over: what fails later fails in a collective (evaluate.runtime.peers)
    if trainer.received_sigterm:  # during the last batch Lightning lets the pass finish: still no verdict
        raise Interrupted(signal.SIGTERM)
    return dict(logged[0]) if logged else {}


def cluster_environment(trainer: L.Trainer) -> str | None:
    """How Lightning found its processes (SLURMEnvironment, TorchElasticEnvironment, ...); single-device
    strategies keep it on the accelerator connector only."""
    env = getattr(trainer.strategy, "cluster_environment", None)
    if env is None:
        env = getattr(getattr(trainer, "_accelerator_connector", None), "cluster_environment", None)
    if env is None:
        return None
    # Lightning's class (the step-sized SLURMStepEnvironment is recorded as the SLURMEnvironment it refines)
    return next(c.__name__ for c in type(env).__mro__ if c.__module__.startswith("lightning"))
