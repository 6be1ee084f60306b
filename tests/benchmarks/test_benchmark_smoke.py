"""Every benchmark script runs end to end in its smoke mode (tiny inputs, a few steps, random or
bundled weights), writing its results to a temporary folder: a benchmark that breaks fails the
test suite, and the committed results under benchmarks/results/ are never touched."""

from __future__ import annotations

import ast
import csv
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.engine.runs import InterruptAt
from tests.paths import ROOT
from yolact_lite.checkpoint.files import read_state_file

BENCH = ROOT / "benchmarks"
COMMITTED = BENCH / "results"
SCRIPTS = sorted(p.stem for p in BENCH.glob("*.py") if not p.stem.startswith("_"))

# Script -> the arguments of its smoke run, in process (each script's --smoke says what it shrinks).
IN_PROCESS = {
    "allocator": ["--smoke"],
    "backends": ["--smoke"],
    "compare_finetune": ["--smoke"],
    "compare_maskrcnn": ["--smoke"],
    "end_to_end": ["--smoke"],
    "finetune_recipe": ["--smoke"],
    "long_run": ["--smoke"],
    "mask_postprocess": ["--smoke"],
    "nms_speed": ["--smoke"],
    "precision": ["--smoke"],
    "prototype_health": ["--smoke"],
    "profile_fp32": ["--smoke"],
    "small_objects": ["--smoke"],
    "tracking": ["--smoke"],
    "train_profile": ["--smoke"],
    "train_speed": ["--smoke"],
    "video_fps": ["--smoke"],
}
# k_sweep trains and measures in subprocesses, run_all runs scripts as subprocesses: their own tests below.
OWN_TESTS = {"k_sweep", "run_all"}


def _snapshot(folder: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} if folder.is_dir() else {}


@pytest.fixture
def results_dir(tmp_path, monkeypatch):
    """A temporary results folder for the benchmark helpers, the scripts that name it, and their
    subprocesses; the committed results must be the same afterwards."""
    common = importlib.import_module("benchmarks._common")
    out = tmp_path / "results"
    monkeypatch.setenv("YOLACT_LITE_RESULTS_DIR", str(out))
    monkeypatch.setattr(common, "RESULTS_DIR", out)
    for name in SCRIPTS:  # imported before patching, so that their own value comes back afterwards
        module = importlib.import_module(f"benchmarks.{name}")
        if hasattr(module, "RESULTS_DIR"):
            monkeypatch.setattr(module, "RESULTS_DIR", out)
    before = _snapshot(COMMITTED)
    yield out
    assert _snapshot(COMMITTED) == before, "a smoke run wrote into benchmarks/results/"


def _tables(folder: Path) -> dict:
    """{file name: rows} of every CSV a run wrote."""
    tables = {}
    for path in sorted(folder.glob("*.csv")):
        with path.open(newline="") as f:
            tables[path.name] = list(csv.DictReader(f))
    return tables


def test_every_benchmark_script_has_a_smoke_run():
    assert sorted(set(IN_PROCESS) | OWN_TESTS) == SCRIPTS


@pytest.mark.parametrize("name", sorted(IN_PROCESS))
def test_benchmark_smoke_run_writes_its_tables(name, results_dir):
    module = importlib.import_module(f"benchmarks.{name}")
    assert module.main(IN_PROCESS[name]) in (None, 0)
    tables = _tables(results_dir)
    assert tables, f"{name} wrote no table"
    assert all(rows for rows in tables.values()), f"{name} wrote an empty table: {tables}"
    for path in results_dir.glob("*.md"):
        assert "- cpu: " in path.read_text(), f"{path.name} does not record the machine"


def test_k_sweep_smoke_trains_measures_resumes_and_summarises(results_dir, tmp_path):
    runs = tmp_path / "runs"
    command = [sys.executable, "-m", "benchmarks.k_sweep", "--smoke", "--runs-dir", str(runs)]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    tables = _tables(results_dir)
    per_run, summary = tables["k_sweep_smoke_runs.csv"], tables["k_sweep_smoke.csv"]
    assert [(r["k"], r["seed"]) for r in per_run] == [("8", "0"), ("16", "0")]
    assert [r["k"] for r in summary] == ["8", "16"]
    assert all(float(r["net_ms"]) > 0 and float(r["mask_branch_ms"]) > 0 for r in per_run)
    # each run says under which threads and load it trained and was timed
    assert all(r["train_threads"] == r["timed_threads"] == "2" for r in per_run)
    assert all(float(r["train_load"]) >= 0 and float(r["timed_load"]) >= 0 for r in per_run)
    assert all(r["train_cpu"] and r["timed_cpu"] for r in per_run)
    # more prototypes: more parameters, all of them in the mask branch
    params = [int(r["params"]) for r in per_run]
    mask_params = [int(r["mask_params"]) for r in per_run]
    assert params[1] - params[0] == mask_params[1] - mask_params[0] > 0
    assert (results_dir / "k_sweep_smoke.png").stat().st_size > 0
    # prototype use is counted on val images: alive <= k, active <= alive
    assert all(0 <= int(r["prototypes_active"]) <= int(r["prototypes_alive"]) <= int(r["k"]) for r in per_run)
    measured = json.loads((runs / "k8_s0" / "measure_result.json").read_text())
    assert len(measured["prototype_share"]) == 8 and measured["activity_images"] > 0
    recipe = json.loads((runs / "k8_s0" / "train_result.json").read_text())["recipe"]
    assert recipe["train_json"] == "data/coco_mini/train/annotations_person.json"
    assert recipe["config"] == "yolact_effl0_finetune" and recipe["steps"] == 2

    # run again: both finished runs are kept, nothing is trained or measured
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("finished earlier") == 2 and "worker" not in again.stdout
    assert _tables(results_dir)["k_sweep_smoke_runs.csv"] == per_run

    # --reuse: no training, no per-run measuring (memory and size are kept); both trained models
    # timed side by side in one process
    retimed = subprocess.run([*command, "--reuse"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert retimed.returncode == 0, retimed.stdout[-2000:] + retimed.stderr[-3000:]
    assert "train worker" not in retimed.stdout and "measure worker" not in retimed.stdout
    assert retimed.stdout.count("time worker") == 1
    again_rows = _tables(results_dir)["k_sweep_smoke_runs.csv"]
    assert [(r["k"], r["mask_AP"], r["params"]) for r in again_rows] == [(r["k"], r["mask_AP"], r["params"])
                                                                         for r in per_run]
    assert "side by side in ONE process" in (results_dir / "k_sweep_smoke_runs.md").read_text()

    # a clean clone has the committed rows but no run folders: rows of the command's recipe are
    # kept (plain and --reuse alike: their models are elsewhere), nothing is trained or timed
    elsewhere = [*command[:-1], str(tmp_path / "empty")]
    for extra in ([], ["--reuse"]):
        clone = subprocess.run([*elsewhere, *extra], cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert clone.returncode == 0, clone.stdout[-2000:] + clone.stderr[-3000:]
        assert clone.stdout.count("no run folder here") == 2 and "worker" not in clone.stdout
        assert _tables(results_dir)["k_sweep_smoke_runs.csv"] == again_rows
    K = importlib.import_module("benchmarks.k_sweep")
    ids = {K.recipe_id(K.build_spec(K.parse_args(["--smoke", *more]), 8, 0, None)["recipe"])
           for more in ([], ["--steps", "3"], ["--set", "model.coefficient_init=zero"])}
    assert len(ids) == 3  # a changed recipe does not match a committed row: it is trained again
    assert [r["recipe_id"] for r in again_rows] == [
        K.recipe_id(K.build_spec(K.parse_args(["--smoke"]), k, 0, None)["recipe"]) for k in (8, 16)]

    # a run cut off after its first step (as by the end of a session) goes on from its checkpoint,
    # to the weights of the uninterrupted run above
    cut = tmp_path / "cut"
    spec = K.build_spec(K.parse_args(["--smoke", "--k", "8"]), 8, 0, cut / "k8_s0")
    (cut / "k8_s0").mkdir(parents=True)
    (cut / "k8_s0" / "spec.json").write_text(json.dumps(spec))
    threads = torch.get_num_threads()
    torch.set_num_threads(spec["threads"])  # as in the worker: resume is exact at the same count
    try:
        with pytest.raises(KeyboardInterrupt):
            K.build_trainer(spec, extra_hooks=[InterruptAt(1)]).fit()
    finally:
        torch.set_num_threads(threads)
    resumed = subprocess.run([*command[:-1], str(cut), "--k", "8"], cwd=ROOT, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-3000:]
    assert "k=8 seed=0: training, resumed from" in resumed.stdout
    trained = json.loads((cut / "k8_s0" / "train_result.json").read_text())
    assert trained["resumed_at_step"] == 1 and trained["steps"] == 2
    whole, pieced = (read_state_file(r / "k8_s0" / "model.pt")["model"] for r in (runs, cut))
    assert whole.keys() == pieced.keys() and all(torch.equal(whole[k], pieced[k]) for k in whole)
    # --reuse of a single run: nothing to time it beside, so it is measured again on its own
    alone = subprocess.run([*command[:-1], str(cut), "--k", "8", "--reuse"], cwd=ROOT, capture_output=True,
                           text=True, timeout=600)
    assert alone.returncode == 0, alone.stdout[-2000:] + alone.stderr[-3000:]
    assert alone.stdout.count("measure worker") == 1 and "time worker" not in alone.stdout


def test_k_sweep_cost_only_smoke_measures_random_weight_models(results_dir, tmp_path):
    command = [sys.executable, "-m", "benchmarks.k_sweep", "--cost-only", "--smoke", "--config", "yolact_effl0",
               "--k", "8", "16", "--input-size", "128", "--runs-dir", str(tmp_path / "runs")]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    rows = _tables(results_dir)["k_sweep_cost_smoke.csv"]
    assert [(r["config"], r["k"], r["input_size"]) for r in rows] == [("yolact_effl0", "8", "128"),
                                                                      ("yolact_effl0", "16", "128")]
    assert all(float(r["proto_ms"]) > 0 and float(r["e2e_ms"]) > 0 for r in rows)
    # memory in a process per k, times of both k in one process
    assert proc.stdout.count("measure worker") == 2 and proc.stdout.count("time worker") == 1
    assert int(rows[1]["mask_params"]) > int(rows[0]["mask_params"])
    assert "side by side in ONE process" in (results_dir / "k_sweep_cost_smoke.md").read_text()


def test_run_all_runs_a_benchmark_and_writes_its_summary(results_dir):
    command = [sys.executable, "-m", "benchmarks.run_all", "--quick", "--only", "nms_speed",
               "--args", "nms_speed=--smoke --name nms_speed_smoke"]
    proc = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "nms_speed  ok" in proc.stdout
    assert (results_dir / "nms_speed_smoke.csv").is_file()
    assert "| nms_speed | ok | 0 |" in (results_dir / "run_all_quick.md").read_text()


# The compiled extension module: nms_speed times its kernel alone, beside the public fast_nms.
EXTENSION = "_C"


def _private_uses(path: Path) -> list:
    """``from yolact_lite... import _name`` and ``obj._name`` (other than ``self._name``) in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("yolact_lite"):
            found += [f"line {node.lineno}: import {a.name}" for a in node.names
                      if a.name.startswith("_") and a.name != EXTENSION]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            if not (isinstance(node.value, ast.Name) and node.value.id == "self"):
                found.append(f"line {node.lineno}: .{node.attr}")
    return found


@pytest.mark.parametrize("name", SCRIPTS)
def test_benchmarks_use_only_public_library_names(name):
    assert _private_uses(BENCH / f"{name}.py") == []


def test_private_name_check_sees_a_private_attribute(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from yolact_lite.model import _hidden\n\ndef f(head):\n    return head._flatten(1), self._own\n")
    assert _private_uses(bad) == ["line 1: import _hidden", "line 4: ._flatten"]


def test_gpu_check_times_the_k_sweep_cost_side():
    """``make gpu-check`` times the network and mask branch for k = 8, 32, 128 at 550, no training."""
    plan = subprocess.run(["bash", "scripts/gpu_check.sh", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert plan.returncode == 0 and "k_sweep --cost-only" in plan.stdout
    script = (ROOT / "scripts" / "gpu_check.sh").read_text()
    assert "-m benchmarks.k_sweep --cost-only --device cuda --config yolact_base --k 8 32 128" in script
    assert "k_sweep_cost_cuda.*" in script  # packed into the tar


def test_finetune_recipe_keeps_finished_rows_when_run_again(results_dir, capsys):
    recipe = importlib.import_module("benchmarks.finetune_recipe")
    recipe.main(["--smoke", "--precision", "fp32"])
    first = _tables(results_dir)["finetune_recipe.csv"]
    assert [(r["row"], r["seed"], r["precision"]) for r in first] == [("baseline", "0", "fp32")]
    capsys.readouterr()
    recipe.main(["--smoke", "--precision", "fp32"])  # the same command again: nothing to train
    assert "baseline seed 0: finished earlier (2 steps, fp32): kept" in capsys.readouterr().out
    assert _tables(results_dir)["finetune_recipe.csv"] == first
    assert {f"{kind}_tide_{t}" for kind in ("box", "mask") for t in recipe.TIDE_COLUMNS} <= set(first[0])
    assert "| baseline | 2 steps | fp32 | 1 |" in (results_dir / "finetune_recipe.md").read_text()
    assert first[0]["threads"] == "2"  # --threads' default, recorded per run


def test_finetune_recipe_trains_for_a_time_budget(results_dir, capsys):
    """``--minutes``: each run stops at its wall-clock budget; rows are kept per budget."""
    recipe = importlib.import_module("benchmarks.finetune_recipe")
    recipe.main(["--smoke", "--precision", "fp32", "--minutes", "0.05", "--name", "budget"])
    (row,) = _tables(results_dir)["budget.csv"]
    assert float(row["minutes"]) == 0.05 and int(row["steps"]) >= 1
    printed = capsys.readouterr()
    # A fast machine fits a plan in the budget and finishes it; a slow one stops at the budget.
    assert re.search(r"plan: ~\d+ steps fit in 0\.05 min|stopped at the time budget \(0\.05 min\)",
                     printed.out + printed.err)
    recipe.main(["--smoke", "--precision", "fp32", "--minutes", "0.05", "--name", "budget"])
    assert "baseline seed 0: finished earlier (0.05 min, fp32): kept" in capsys.readouterr().out
