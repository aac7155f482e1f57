"""The cluster page's examples (docs/cluster.md) match the code: every command in them parses, and the allocation
their sbatch header makes (and the torchrun launch) resolves to one job over every GPU, with no flag to add;
the binding the page warns against is refused as it says."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest

from evaluate.runtime.allocation import resolve_devices
from evaluate.cli import build_parser, plan_parts
from evaluate.plan import PlanError, default_num_workers

PAGE = Path(__file__).resolve().parents[1] / "docs" / "cluster.md"


def cluster_section() -> str:
    return PAGE.read_text(encoding="utf-8")


def code_blocks(section: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", section, re.S)


def commands(block: str) -> list[list[str]]:
    """The shell commands of a block, continuation lines joined, comments and #SBATCH lines left out."""
    joined = block.replace("\\\n", " ")
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            out.append(shlex.split(line.replace("$USER", "me").replace("$SLURM_JOB_ID", "123")))
    return out


def evaluate_args(argv: list[str]) -> list[str]:
    """The arguments after ``-m evaluate`` (and after ``cache build``)."""
    rest = argv[argv.index("evaluate") + 1:]
    return rest[2:] if rest[:2] == ["cache", "build"] else rest


def sbatch_env(block: str) -> tuple[dict[str, str], int, int]:
    opts = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", block, re.M))
    nodes, per_node = int(opts["nodes"]), int(opts["ntasks-per-node"])
    gpus = int(opts["gpus-per-node"])
    env = {"SLURM_NTASKS": str(nodes * per_node), "SLURM_NTASKS_PER_NODE": str(per_node), "SLURM_NNODES": str(nodes),
           "SLURM_JOB_NAME": "eval.sbatch", "SLURM_PROCID": "5", "SLURM_CPUS_PER_TASK": opts["cpus-per-task"],
           "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(gpus)),
           # the page's commands run under srun: a task of a step of the job's every task
           "SLURM_STEP_ID": "0", "SLURM_STEP_NUM_TASKS": str(nodes * per_node), "SLURM_STEP_NUM_NODES": str(nodes),
           "SLURM_STEP_TASKS_PER_NODE": f"{per_node}(x{nodes})"}
    return env, per_node, nodes


def test_the_sbatch_example_is_one_job_over_every_gpu_of_the_allocation():
    sbatch = next(b for b in code_blocks(cluster_section()) if "#SBATCH" in b)
    env, per_node, nodes = sbatch_env(sbatch)
    runs = [c for c in commands(sbatch) if c[:1] == ["srun"]]
    assert len(runs) == 2 and any("cache" in c for c in runs)
    for argv in runs:
        args = build_parser().parse_args(evaluate_args(argv))
        run = plan_parts(args)[2]
        assert resolve_devices(run, env) == (per_node, nodes)
    # the task's CPUs, bounded by what this test process may use
    assert default_num_workers(env) == min(8, int(env["SLURM_CPUS_PER_TASK"]), len(os.sched_getaffinity(0)))


def test_the_torchrun_example_is_one_job_over_its_processes():
    block = next(b for b in code_blocks(cluster_section()) if "torchrun" in b)
    (argv,) = commands(block)
    n = int(argv[argv.index("--nproc_per_node") + 1])
    env = {"TORCHELASTIC_RUN_ID": "x", "WORLD_SIZE": str(n), "LOCAL_WORLD_SIZE": str(n), "RANK": "3",
           "CUDA_VISIBLE_DEVICES": ",".join(str(i) for i in range(n))}
    run = plan_parts(build_parser().parse_args(evaluate_args(argv)))[2]
    assert resolve_devices(run, env) == (n, 1)


def test_the_binding_the_page_warns_against_is_refused_as_it_says():
    sbatch = next(b for b in code_blocks(cluster_section()) if "#SBATCH" in b)
    env, per_node, _ = sbatch_env(sbatch)
    env["CUDA_VISIBLE_DEVICES"] = "0"  # --gpus-per-task=1: each task sees its own GPU
    argv = [c for c in commands(sbatch) if c[:1] == ["srun"]][-1]
    run = plan_parts(build_parser().parse_args(evaluate_args(argv)))[2]
    with pytest.raises(PlanError, match=f"--ntasks-per-node={per_node} --gpus-per-node={per_node} instead of "
                                        "--gpus-per-task=1"):
        resolve_devices(run, env)
    assert "--gpus-per-task=1" in cluster_section()


# Every sentence of the page (its prose: bullets and paragraphs, not code or headings), by its first words, and the
# tests that check what it says ("file::test"); a sentence added to the page without its tests fails here.
CLAIMS = {
    "One job evaluates on every GPU": ["test_slurm_cluster.py::test_a_job_of_two_tasks_is_one_job_of_world_size_two",
                                       "test_faults.py::test_a_bad_image_on_either_rank_ends_both_with_one_line"],
    "The world size, ranks and nodes come from the launcher": [
        "test_slurm_step.py::test_a_step_of_part_of_the_job_is_read_from_the_step",
        "test_cluster.py::test_torchrun_processes_make_one_job_with_devices_auto",
        "test_slurm_cluster.py::test_two_nodes_in_namespaces_make_one_job_with_the_one_process_figures",
        "test_slurm_step.py::test_a_launch_is_refused_before_torch_and_lightning_are_imported"],
    "SLURM (`sbatch eval.sbatch`": ["test_docs_cluster.py::test_the_sbatch_example_is_one_job_over_every_gpu_of_the_allocation",
                                    "test_docs_cluster.py::test_the_torchrun_example_is_one_job_over_its_processes"],
    "torchrun (one node, 8 GPUs": ["test_docs_cluster.py::test_the_torchrun_example_is_one_job_over_its_processes",
                                   "test_slurm_cluster.py::test_two_nodes_in_namespaces_make_one_job_with_the_one_process_figures"],
    "`--gpus-per-task=1`": ["test_docs_cluster.py::test_the_binding_the_page_warns_against_is_refused_as_it_says",
                            "test_cluster.py::test_per_task_gpu_binding_on_the_command_line_is_one_line_exit_2"],
    "Inside an `srun` step, `--ntasks=M` without `--ntasks-per-node`": [
        "test_slurm_step.py::test_a_step_of_ntasks_without_ntasks_per_node_is_one_job_of_them"],
    "A step whose tasks are spread unevenly": ["test_slurm_step.py::test_a_step_spread_unevenly_over_its_nodes_is_refused"],
    "Every task is started by `srun`.": ["test_slurm_cluster.py::test_the_batch_script_without_srun_is_refused_in_one_line"],
    "A batch script that runs `python -m evaluate` without `srun`": [
        "test_slurm_cluster.py::test_the_batch_script_without_srun_is_refused_in_one_line",
        "test_slurm_step.py::test_the_batch_script_of_a_job_of_several_tasks_is_refused_saying_srun"],
    "A job of one task runs as one process.": [
        "test_slurm_step.py::test_the_batch_script_of_a_job_of_several_tasks_is_refused_saying_srun"],
    "`--num-workers` defaults to `SLURM_CPUS_PER_TASK`": [
        "test_docs_cluster.py::test_the_sbatch_example_is_one_job_over_every_gpu_of_the_allocation",
        "test_numerics.py::test_default_num_workers_from_the_cpus_this_process_may_use"],
    "Shared paths have one writer": [
        "test_cluster.py::test_srun_tasks_build_one_cache_together_each_decoding_its_share",
        "test_cluster.py::test_demo_under_srun_converts_once_and_every_task_uses_that_folder"],
    "A task whose share fails": [
        "test_cluster.py::test_a_bad_image_in_one_share_ends_every_builder_with_its_line",
        "test_cluster.py::test_a_builder_that_dies_ends_the_others_with_one_line_and_a_rerun_decodes_only_its_share"],
    "A rerun reuses the parts already finished": [
        "test_cluster.py::test_a_builder_that_dies_ends_the_others_with_one_line_and_a_rerun_decodes_only_its_share"],
    "The numerics are IEEE float32 unless `--tf32`": [
        "test_numerics.py::test_tf32_for_the_converted_model_only_ieee_for_the_original_flags_restored_after"],
    "`bash benchmarks/gpu_check.sh OUT` is the prepared GPU check": [
        "test_benchmark_gpu.py::test_the_gpu_plan_covers_both_variants_every_setting_and_a_budget",
        "test_benchmark_gpu.py::test_the_command_line_with_a_spent_budget_skips_cells_says_so_and_cleans_up"],
    "Faults on several processes are decided together": [
        "test_faults.py::test_a_bad_image_on_either_rank_ends_both_with_one_line",
        "test_faults.py::test_a_rank_without_images_takes_part",
        "test_faults.py::test_nothing_readable_with_skip_bad_images_is_bad_input"],
    "Inside a job step (`srun`) the step's own variables decide": [
        "test_slurm_step.py::test_a_step_of_part_of_the_job_is_read_from_the_step",
        "test_slurm_cluster.py::test_a_job_of_two_tasks_is_one_job_of_world_size_two"],
    "A step of several tasks is one job even when": [
        "test_slurm_step.py::test_a_multi_task_step_of_an_interactive_job_is_one_job"],
    "One task of an interactive step": ["test_slurm_step.py::test_a_multi_task_step_of_an_interactive_job_is_one_job"],
    "A flag that contradicts the allocation": [
        "test_slurm_step.py::test_a_contradicting_flag_is_refused_before_the_demo_converts",
        "test_slurm_step.py::test_a_launch_is_refused_before_torch_and_lightning_are_imported"],
    "The ranks share nothing until the end of the pass": [
        "test_slurm_cluster.py::test_a_killed_rank_is_named_on_the_survivor_in_one_line",
        "test_launch_faults.py::test_a_task_that_dies_is_noticed_in_seconds_and_named"],
    "Every survivor then ends at once with one line": [
        "test_slurm_cluster.py::test_a_killed_rank_is_named_on_the_survivor_in_one_line"],
    "Nothing else reaches stderr": ["test_slurm_cluster.py::test_a_killed_rank_is_named_on_the_survivor_in_one_line"],
    "A collective that fails while the reports are written": [
        "test_launch_faults.py::test_a_task_that_dies_is_noticed_in_seconds_and_named"],
    "A peer that vanishes while this task has a SIGTERM": [
        "test_slurm_cluster.py::test_scancel_ends_every_task_with_143_and_its_line",
        "test_launch_faults.py::test_a_peer_gone_with_a_signal_pending_is_the_interruption"],
    "The bound on a wait": ["test_launch_faults.py::test_a_task_that_dies_is_noticed_in_seconds_and_named",
                            "test_launch_faults.py::test_a_signal_is_seen_while_the_main_thread_waits_in_c"],
    "To stop a stuck launch sooner": ["test_launch_faults.py::test_a_signal_is_seen_while_the_main_thread_waits_in_c"],
    "`scancel`, a time limit or preemption (SIGTERM) ends every task with 143": [
        "test_slurm_cluster.py::test_scancel_ends_every_task_with_143_and_its_line",
        "test_slurm_cluster.py::test_scancel_across_two_nodes_ends_both_with_143",
        "test_evaluate_errors.py::test_a_signal_mid_pass_exits_128_plus_signal_and_leaves_the_previous_report"],
    "The DataLoader workers get the same signal": [
        "test_launch_faults.py::test_a_worker_dead_of_the_scancel_is_the_interruption_on_every_task",
        "test_launch_faults.py::test_a_worker_death_reads_as_the_signal_that_caused_it"],
    "Lightning 2.6's own SIGTERM notifier": [
        "test_launch_faults.py::test_a_worker_dead_of_the_scancel_is_the_interruption_on_every_task",
        "test_slurm_cluster.py::test_scancel_ends_every_task_with_143_and_its_line"],
    "A signal is seen when it arrives": ["test_launch_faults.py::test_a_signal_is_seen_while_the_main_thread_waits_in_c"],
    "Every wait for peers ends on a signal.": [
        "test_launch_faults.py::test_a_signal_is_seen_while_the_main_thread_waits_in_c",
        "test_slurm_cluster.py::test_scancel_ends_every_task_with_143_and_its_line"],
    "Multi-GPU and clusters: Lightning's Trainer handles": [
        "test_cluster.py::test_srun_tasks_make_one_job_with_devices_auto",
        "test_evaluate_options.py::test_torchrun_two_processes_without_device_flags_are_one_job"],
    "`--strategy ddp_spawn`/`ddp_fork` are refused": [
        "test_evaluate_errors.py::test_settings_that_would_give_a_wrong_answer_are_refused_first"],
    "`tests/test_slurm_cluster.py` starts a SLURM 22.05 cluster": [
        "test_slurm_cluster.py::test_a_job_of_two_tasks_is_one_job_of_world_size_two",
        "test_slurm_cluster.py::test_two_nodes_in_namespaces_make_one_job_with_the_one_process_figures"],
    "It needs root and Debian's `slurm-wlm` and `munge`": [
        "test_docs.py::test_ci_installs_slurm_and_munge_for_the_real_cluster",
        "test_slurm_cluster.py::test_a_missing_tool_or_root_fails_with_one_line_saying_what_to_install"],
    "`tests/test_docs_cluster.py` parses this page's commands": [
        "test_docs_cluster.py::test_every_sentence_of_the_page_names_the_tests_that_check_it"],
}


def sentences(page: str) -> list[str]:
    """The page's prose, sentence by sentence: code blocks and headings left out; a bullet, a paragraph and the line
    before a code block end a sentence; wrapped lines joined."""
    text = re.sub(r"```.*?```", "\n\n", page, flags=re.S)
    blocks = re.split(r"\n\s*\n|\n(?=- )", text)
    out = []
    for block in blocks:
        prose = " ".join(line.strip().removeprefix("- ") for line in block.splitlines()
                         if line.strip() and not line.startswith("#"))
        out += [s for s in re.split(r"(?<=[.])\s+(?=[A-Z`(])", prose) if s]
    return out


def test_every_sentence_of_the_page_names_the_tests_that_check_it():
    said = sentences(cluster_section())
    unclaimed = [s for s in said if not any(s.startswith(k) for k in CLAIMS)]
    assert not unclaimed, f"sentences of docs/cluster.md without their tests in CLAIMS: {unclaimed}"
    stale = [k for k in CLAIMS if not any(s.startswith(k) for s in said)]
    assert not stale, f"CLAIMS for sentences no longer on the page: {stale}"
    tests = Path(__file__).parent
    for claim, names in CLAIMS.items():
        for name in names:
            file, test = name.split("::")
            assert f"def {test}(" in (tests / file).read_text(encoding="utf-8"), f"{claim!r}: {name} does not exist"
