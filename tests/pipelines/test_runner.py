"""Runner behaviour with small in-process stages: skip, resume, invalidate, report."""

import json

import pytest

from modalities.fileio import atomic_write_text
from pipelines.config import load_config
from pipelines.runner import Runner, StageResult


class Interrupt(Exception):
    pass


def make_stages(calls: dict, fail_after: dict | None = None):
    """Stage functions by kind: a fake dataset writer, a fake reader of it, a fake trainer."""
    fail_after = fail_after or {}

    def first(ctx):
        calls["first"] = calls.get("first", 0) + 1
        n = ctx.config.scenes
        (ctx.stage_dir / "nuscenes").mkdir(exist_ok=True)
        for i in range(n):
            out = ctx.stage_dir / "nuscenes" / f"part_{i}.txt"
            if out.exists():
                continue  # resume: keep finished parts
            calls.setdefault("parts", []).append(i)
            if fail_after.get("first") == i:
                raise Interrupt(f"killed before part {i}")
            atomic_write_text(out, f"{ctx.seed}:{i}\n")
        return StageResult(metrics={"parts": n}, report_md="first stage ran")

    def second(ctx):
        calls["second"] = calls.get("second", 0) + 1
        parts = sorted((ctx.inputs["dataset"]).glob("part_*.txt"))
        atomic_write_text(ctx.stage_dir / "sum.txt", "".join(p.read_text() for p in parts))
        return StageResult(metrics={"inputs": len(parts)})

    def train(ctx):
        calls.setdefault("train", []).append(ctx.name)
        sums = (ctx.inputs[ctx.config.superpixels] / "sum.txt").read_text()
        atomic_write_text(ctx.stage_dir / "out.txt", f"{sums}holdout={ctx.dataset.holdout_scenes}\n")
        return StageResult()

    return {"synth_driving": first, "superpixels": second, "slidr": train}


TRAINER = "{kind: slidr, dataset: driving, superpixels: superpixels, student: range_net}"


@pytest.fixture
def cfg_factory(tmp_path):
    def make(*overrides):
        return load_config(
            "configs/tiny.yaml", [f"runs_dir={tmp_path}", "only=[synth, superpixels]", "stages.synth.scenes=3", *overrides]
        )

    return make


def test_second_run_skips_everything(cfg_factory):
    calls = {}
    cfg = cfg_factory()
    report = Runner(cfg, functions=make_stages(calls)).run()
    assert [s["status"] for s in report.values()] == ["ran", "ran"]
    report = Runner(cfg, functions=make_stages(calls)).run()
    assert [s["status"] for s in report.values()] == ["skipped", "skipped"]
    assert calls["first"] == 1 and calls["second"] == 1
    manifest = json.loads((cfg.run_dir / "synth" / "manifest.json").read_text())
    assert set(manifest["outputs"]) == {"nuscenes/part_0.txt", "nuscenes/part_1.txt", "nuscenes/part_2.txt",
                                        "report.md", "config.yaml"}
    assert all(len(e["sha256"]) == 64 for e in manifest["outputs"].values())
    assert manifest["metrics"] == {"parts": 3} and "torch" in manifest["versions"]
    run_report = json.loads((cfg.run_dir / "report.json").read_text())
    assert run_report["stages"]["synth"]["metrics"] == {"parts": 3}
    assert "first stage ran" in (cfg.run_dir / "report.md").read_text()


def test_interrupted_stage_resumes_and_matches_clean_run(cfg_factory, tmp_path):
    calls = {}
    cfg = cfg_factory()
    with pytest.raises(Interrupt):
        Runner(cfg, functions=make_stages(calls, fail_after={"first": 2})).run()
    assert not (cfg.run_dir / "synth" / "manifest.json").exists()
    assert calls["parts"] == [0, 1, 2]
    Runner(cfg, functions=make_stages(calls)).run()
    assert calls["parts"] == [0, 1, 2, 2]  # only the unfinished part was redone

    clean = cfg_factory(f"runs_dir={tmp_path / 'clean'}")
    Runner(clean, functions=make_stages({})).run()
    for stage in ("synth", "superpixels"):
        a = json.loads((cfg.run_dir / stage / "manifest.json").read_text())["outputs"]
        b = json.loads((clean.run_dir / stage / "manifest.json").read_text())["outputs"]
        assert a == b


def test_config_change_reruns_stage_and_downstream(cfg_factory):
    calls = {}
    Runner(cfg_factory(), functions=make_stages(calls)).run()
    report = Runner(cfg_factory("stages.synth.scenes=2"), functions=make_stages(calls)).run()
    assert [s["status"] for s in report.values()] == ["ran", "ran"]
    run_dir = cfg_factory().run_dir
    assert not (run_dir / "synth" / "nuscenes" / "part_2.txt").exists()  # stale output of the old config removed
    assert (run_dir / "superpixels" / "sum.txt").read_text() == "0:0\n0:1\n"


def test_changed_upstream_output_reruns_downstream_only(cfg_factory):
    calls = {}
    cfg = cfg_factory()
    Runner(cfg, functions=make_stages(calls)).run()
    # A deleted output makes the manifest stale: that stage runs again.
    (cfg.run_dir / "superpixels" / "sum.txt").unlink()
    report = Runner(cfg, functions=make_stages(calls)).run()
    assert [s["status"] for s in report.values()] == ["skipped", "ran"]


def test_force_reruns(cfg_factory):
    calls = {}
    cfg = cfg_factory()
    Runner(cfg, functions=make_stages(calls)).run()
    report = Runner(cfg, functions=make_stages(calls), force=("superpixels",)).run()
    assert [s["status"] for s in report.values()] == ["skipped", "ran"]


def test_split_change_reruns_only_stages_that_use_the_split(cfg_factory):
    """holdout_scenes is part of a training stage's key, not of the superpixels' or the generator's."""
    calls = {}
    cfg = cfg_factory(f"stages.train={TRAINER}", "only=[synth, superpixels, train]")
    Runner(cfg, functions=make_stages(calls)).run()
    changed = cfg_factory(f"stages.train={TRAINER}", "only=[synth, superpixels, train]", "datasets.driving.holdout_scenes=2")
    report = Runner(changed, functions=make_stages(calls)).run()
    assert {n: s["status"] for n, s in report.items()} == {"synth": "skipped", "superpixels": "skipped", "train": "ran"}
    assert (changed.run_dir / "train" / "out.txt").read_text().endswith("holdout=2\n")


def test_two_instances_of_one_kind_and_only_reads_upstream_from_disk(cfg_factory):
    calls = {}
    both = ["only=[synth, superpixels, train_a, train_b]", f"stages.train_a={TRAINER}", f"stages.train_b={TRAINER}"]
    Runner(cfg_factory(*both), functions=make_stages(calls)).run()
    assert calls["train"] == ["train_a", "train_b"]
    # Only train_b: its upstream stages are read from their manifests on disk, nothing else runs.
    report = Runner(cfg_factory(*both, "only=[train_b]"), functions=make_stages(calls), force=("train_b",)).run()
    assert list(report) == ["train_b"] and calls["train"] == ["train_a", "train_b", "train_b"]
    assert calls["first"] == 1 and calls["second"] == 1


def test_only_without_upstream_output_is_a_clear_error(cfg_factory):
    with pytest.raises(ValueError, match="stage 'synth' has no finished output .* run it first"):
        Runner(cfg_factory("only=[superpixels]"), functions=make_stages({})).run()
