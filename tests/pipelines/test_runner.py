"""Runner behaviour with small in-process stages: skip, resume, invalidate, report."""

import json

import pytest

from modalities.fileio import atomic_write_text
from pipelines.config import load_config
from pipelines.runner import Runner, Stage, StageResult


class Interrupt(Exception):
    pass


def make_stages(calls: dict, fail_after: dict | None = None):
    fail_after = fail_after or {}

    def first(ctx):
        calls["first"] = calls.get("first", 0) + 1
        n = ctx.config.scenes
        for i in range(n):
            out = ctx.stage_dir / f"part_{i}.txt"
            if out.exists():
                continue  # resume: keep finished parts
            calls.setdefault("parts", []).append(i)
            if fail_after.get("first") == i:
                raise Interrupt(f"killed before part {i}")
            atomic_write_text(out, f"{ctx.seed}:{i}\n")
        return StageResult(metrics={"parts": n}, report_md="first stage ran")

    def second(ctx):
        calls["second"] = calls.get("second", 0) + 1
        parts = sorted((ctx.inputs["synth"]).glob("part_*.txt"))
        atomic_write_text(ctx.stage_dir / "sum.txt", "".join(p.read_text() for p in parts))
        return StageResult(metrics={"inputs": len(parts)})

    return {
        "synth": Stage(first, section="synth"),
        "superpixels": Stage(second, section="superpixels", needs=("synth",)),
    }


@pytest.fixture
def cfg_factory(tmp_path):
    def make(*overrides):
        return load_config(
            "configs/tiny.yaml", [f"runs_dir={tmp_path}", "stages=[synth, superpixels]", "synth.scenes=3", *overrides]
        )

    return make


def test_second_run_skips_everything(cfg_factory):
    calls = {}
    cfg = cfg_factory()
    report = Runner(cfg, make_stages(calls)).run()
    assert [s["status"] for s in report.values()] == ["ran", "ran"]
    report = Runner(cfg, make_stages(calls)).run()
    assert [s["status"] for s in report.values()] == ["skipped", "skipped"]
    assert calls["first"] == 1 and calls["second"] == 1
    manifest = json.loads((cfg.run_dir / "synth" / "manifest.json").read_text())
    assert set(manifest["outputs"]) == {"part_0.txt", "part_1.txt", "part_2.txt", "report.md", "config.yaml"}
    assert all(len(e["sha256"]) == 64 for e in manifest["outputs"].values())
    assert manifest["metrics"] == {"parts": 3} and "torch" in manifest["versions"]
    run_report = json.loads((cfg.run_dir / "report.json").read_text())
    assert run_report["stages"]["synth"]["metrics"] == {"parts": 3}
    assert "first stage ran" in (cfg.run_dir / "report.md").read_text()


def test_interrupted_stage_resumes_and_matches_clean_run(cfg_factory, tmp_path):
    calls = {}
    cfg = cfg_factory()
    with pytest.raises(Interrupt):
        Runner(cfg, make_stages(calls, fail_after={"first": 2})).run()
    assert not (cfg.run_dir / "synth" / "manifest.json").exists()
    assert calls["parts"] == [0, 1, 2]
    Runner(cfg, make_stages(calls)).run()
    assert calls["parts"] == [0, 1, 2, 2]  # only the unfinished part was redone

    clean = cfg_factory(f"runs_dir={tmp_path / 'clean'}")
    Runner(clean, make_stages({})).run()
    for stage in ("synth", "superpixels"):
        a = json.loads((cfg.run_dir / stage / "manifest.json").read_text())["outputs"]
        b = json.loads((clean.run_dir / stage / "manifest.json").read_text())["outputs"]
        assert a == b


def test_config_change_reruns_stage_and_downstream(cfg_factory):
    calls = {}
    Runner(cfg_factory(), make_stages(calls)).run()
    report = Runner(cfg_factory("synth.scenes=2"), make_stages(calls)).run()
    assert [s["status"] for s in report.values()] == ["ran", "ran"]
    run_dir = cfg_factory().run_dir
    assert not (run_dir / "synth" / "part_2.txt").exists()  # stale output of the old config removed
    assert (run_dir / "superpixels" / "sum.txt").read_text() == "0:0\n0:1\n"


def test_changed_upstream_output_reruns_downstream_only(cfg_factory):
    calls = {}
    cfg = cfg_factory()
    Runner(cfg, make_stages(calls)).run()
    # A deleted output makes the manifest stale: that stage runs again.
    (cfg.run_dir / "superpixels" / "sum.txt").unlink()
    report = Runner(cfg, make_stages(calls)).run()
    assert [s["status"] for s in report.values()] == ["skipped", "ran"]


def test_force_reruns(cfg_factory):
    calls = {}
    cfg = cfg_factory()
    Runner(cfg, make_stages(calls)).run()
    report = Runner(cfg, make_stages(calls), force=("superpixels",)).run()
    assert [s["status"] for s in report.values()] == ["skipped", "ran"]
