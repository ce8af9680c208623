"""Stage ``evaluate``: few-label evaluation of every distilled student vs random init.

For each training stage named in ``students`` (read through its student record,
``student.json``; the record's ``task`` picks the evaluation task, :mod:`.tasks`), each
label fraction and each protocol, the same network is evaluated
from the distilled weights and from random initialisation in paired runs (the same
labelled subset and seed for both; ``repeats`` / ``finetune_repeats`` runs). Every
comparison is a record with the mean gain and its 95% interval
(:func:`pipelines.evaluate.protocols.paired_comparison`) in ``results.json``, in the
stage's metrics (``report.json``) and in the report, with per-class IoU.

Students of the same task are also compared with each other (``head_to_head``): every pair of
distilled students, protocol by protocol and fraction by fraction, on the very same paired runs
(the labelled subset and seed of run ``r`` depend only on the task and ``r``). That answers "is
objective A better than objective B" (e.g. COMODO vs its InfoNCE baseline) with an interval; it
is an interval over labelled subsets for the two given pre-trainings, not over pre-training seeds.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from modalities.fileio import atomic_write_json
from modalities.segmentation_metrics import confusion_matrix, iou_per_class

from ..runner import StageContext, StageResult
from ..student_record import read_student_record
from .config import EvaluateConfig
from .protocols import fit_linear_probe, paired_comparison, svm_scores, top_k_accuracy
from .tasks import evaluation_task


def labeled_subset(n: int, fraction: float, seed: int) -> np.ndarray:
    """Indices of ``max(1, round(fraction * n))`` scans, a seeded choice shared by all runs."""
    k = max(1, int(round(fraction * n)))
    return np.sort(np.random.default_rng(seed).permutation(n)[:k])


INITS = ("distilled", "random")


def run_evaluate(ctx: StageContext) -> StageResult:
    cfg: EvaluateConfig = ctx.config  # type: ignore[assignment]
    tasks: dict[str, object] = {}  # one instance (its labelled data loaded once) per task kind
    runs, comparisons = [], []
    maps = {}  # task -> {label: the first held-out sample's prediction}, where the task draws them (BEV)
    kept = {}  # prepared students that a fused head reuses
    distilled_runs: dict[tuple, dict[str, tuple[list, list]]] = {}  # (task, protocol, fraction) -> student -> runs
    fused_parts = {p for entry in cfg.fused for p in entry}
    for stage, parts in [(s, (s,)) for s in cfg.students] + [("+".join(e), tuple(e)) for e in cfg.fused]:
        records = [read_student_record(ctx.inputs[p]) for p in parts]
        record = records[0]
        if {r["task"] for r in records} != {record["task"]}:
            raise ValueError(f"stage {ctx.name}: fused {list(parts)} mixes evaluation tasks "
                             f"{[r['task'] for r in records]}")
        if record["task"] not in tasks:
            tasks[record["task"]] = evaluation_task(record["task"], f"{ctx.inputs[stage]}/student.json"
                                                    if len(parts) == 1 else str(parts))(ctx, cfg)
        task = tasks[record["task"]]
        C = task.num_classes
        top_k = getattr(task, "top_k", None)
        if len(parts) == 1:
            student = task.student(record, ctx.inputs[stage])
            if stage in fused_parts:
                kept[stage] = student
        else:
            if not hasattr(task, "fuse"):
                raise ValueError(f"stage {ctx.name}: fused heads are not implemented for task {record['task']!r}")
            student = task.fuse([kept[p] for p in parts], stage)
        for fraction in cfg.label_fractions:
            for protocol in cfg.protocols:
                if protocol == "finetune" and (fraction not in cfg.finetune_fractions() or len(parts) > 1):
                    continue
                repeats = cfg.finetune_repeats if protocol == "finetune" else cfg.repeats
                metric = {init: [] for init in INITS}
                metric_k = {init: [] for init in INITS}  # top-k accuracy, where the task reports it
                conf_sum = {init: np.zeros((C, C), np.int64) for init in INITS}
                for r in range(repeats):
                    seed = ctx.seed * 1000 + r  # one labelled subset and seed per paired run, shared by both inits
                    labeled_idx = labeled_subset(task.num_train, fraction, seed)
                    for init in INITS:
                        ctx.log.info("%s (%s init) %s, %.0f%% labels (%d samples), run %d/%d", stage, init, protocol,
                                     fraction * 100, len(labeled_idx), r + 1, repeats)
                        if protocol in ("linear_probe", "svm"):
                            test_x, test_y = student.test_features(init)
                            if protocol == "svm":
                                scores = svm_scores(student.labeled_features(init, labeled_idx), test_x, C,
                                                    cfg.svm_c, seed)
                            else:
                                head = fit_linear_probe(*student.labeled_features(init, labeled_idx), C,
                                                        cfg.probe_steps, cfg.probe_lr, seed)
                                with torch.no_grad():
                                    scores = head(test_x).numpy()
                            conf = confusion_matrix(scores.argmax(1), test_y.numpy(), C)
                            # A task whose deployable model is the frozen student + its probe (BEV) saves it here.
                            if (protocol == "linear_probe" and init == "distilled" and r == 0
                                    and hasattr(student, "save_probe")):
                                student.save_probe(ctx.stage_dir / "models", stage, head, fraction, task.score(conf),
                                                   labeled_idx)
                            if (protocol == "linear_probe" and r == 0 and fraction == cfg.label_fractions[0]
                                    and hasattr(student, "prediction_map")):
                                maps.setdefault(task, {})[f"{stage}, {init}"] = student.prediction_map(scores.argmax(1))
                            if top_k:
                                metric_k[init].append(top_k_accuracy(scores, test_y.numpy(), top_k))
                        else:
                            conf, model = student.finetune(init, labeled_idx, seed)
                            if init == "distilled" and r == 0:  # the deployable model (see deploy/)
                                student.save(ctx.stage_dir / "models", stage, model, fraction, task.score(conf), labeled_idx)
                        metric[init].append(task.score(conf))
                        conf_sum[init] += conf
                        runs.append({"student": stage, "init": init, "protocol": protocol, "label_fraction": fraction,
                                     "run": r, "seed": seed, "labeled_samples": task.train_tokens(labeled_idx),
                                     task.metric: metric[init][-1],
                                     **({f"top{top_k}": metric_k[init][-1]} if metric_k[init] else {})})
                figure = None
                if getattr(task, "confusion_figures", False):  # few classes: a picture says where errors go
                    from ..plots import save_confusion_plot  # noqa: PLC0415

                    figure = f"confusion_{stage}_{protocol}_{fraction * 100:g}pct.png"
                    save_confusion_plot(ctx.stage_dir / figure, {f"{i} init": conf_sum[i] for i in INITS},
                                        list(task.class_names),
                                        f"{stage} {protocol}, {fraction:.0%} labels: all {repeats} runs")
                if len(parts) == 1:
                    distilled_runs.setdefault((record["task"], protocol, fraction), {})[stage] = (
                        metric["distilled"], metric_k["distilled"])
                comparisons.append({
                    "student": stage, "student_kind": "+".join(r["kind"] for r in records), "task": record["task"], "protocol": protocol,
                    "label_fraction": fraction, "labeled_samples": len(labeled_idx), "test_samples": len(task.test),
                    "metric": task.metric, **paired_comparison(metric["distilled"], metric["random"]),
                    "iou_per_class": {init: _class_iou(conf_sum[init], task.class_names) for init in INITS},
                    **({"confusion_figure": figure} if figure else {}),
                    **({f"top{top_k}": paired_comparison(metric_k["distilled"], metric_k["random"])}
                       if metric_k["distilled"] else {}),
                })
    pairs = head_to_head(distilled_runs, {name: t.metric for name, t in tasks.items()})
    atomic_write_json(ctx.stage_dir / "results.json", {"comparisons": comparisons, "head_to_head": pairs,
                                                       "runs": runs})
    summary = [{k: v for k, v in c.items() if k != "iou_per_class"} for c in comparisons]
    metrics = {"comparisons": summary, **({"head_to_head": pairs} if pairs else {})}
    skipped = sum(getattr(t, "skipped", 0) for t in tasks.values())
    if skipped:
        metrics["skipped_unreadable"] = skipped
    md = _report(comparisons, next(iter(tasks.values()))) + _head_to_head_report(pairs)
    figures = [c["confusion_figure"] for c in comparisons if c.get("confusion_figure") and c["protocol"] == "finetune"]
    figures = figures or [c["confusion_figure"] for c in comparisons if c.get("confusion_figure")][-1:]
    if figures:
        md += "\nConfusion matrices (rows: true class, normalised), distilled vs random init:\n\n" + "".join(
            f"![confusion]({ctx.name}/{f})\n" for f in figures)
    for i, (task, by_label) in enumerate(maps.items()):
        name = f"predictions{i or ''}.png"
        what = f"linear probe on {cfg.label_fractions[0]:.0%} of the labels, run 0"
        task.prediction_figure(ctx.stage_dir / name, by_label, f"first held-out sample: {what}")
        md += f"\nPredictions on the first held-out sample ({what}):\n\n![predictions]({ctx.name}/{name})\n"
    return StageResult(metrics=metrics, report_md=md)


def head_to_head(distilled_runs: dict[tuple, dict[str, tuple[list, list]]], metrics: dict[str, str]) -> list[dict]:
    """Every pair of students of one task, protocol and fraction, compared on the same paired runs.

    ``distilled_runs[(task, protocol, fraction)][student] = (scores, top-k scores)`` of the distilled
    weights, run by run; the first student of a pair is the one named first in ``students``. The record
    is :func:`paired_comparison`'s with ``a_mean``/``b_mean`` for its distilled/random means.
    """
    out = []
    for (task, protocol, fraction), by_student in distilled_runs.items():
        names = list(by_student)
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                (sa, ka), (sb, kb) = by_student[a], by_student[b]
                c = paired_comparison(sa, sb)
                rec = {"a": a, "b": b, "task": task, "protocol": protocol, "label_fraction": fraction,
                       "metric": metrics[task], "a_mean": c.pop("distilled_mean"), "b_mean": c.pop("random_mean"),
                       "difference_mean": c.pop("gain_mean"), "difference_ci95": c.pop("gain_ci95"),
                       "n_paired": c.pop("n_paired"), "differs": c.pop("claimed")}
                if ka and kb:
                    k = paired_comparison(ka, kb)
                    rec["top_k"] = {"a_mean": k["distilled_mean"], "b_mean": k["random_mean"],
                                    "difference_mean": k["gain_mean"], "difference_ci95": k["gain_ci95"]}
                out.append(rec)
    return out


def _head_to_head_report(pairs: list[dict]) -> str:
    if not pairs:
        return ""
    lines = ["", "Distilled students head to head (A - B on the same paired runs; the interval is over labelled "
             "subsets for these two pre-trainings, not over pre-training seeds):", "",
             "| A | B | protocol | labels | A | B | A - B [95% CI] | top-k A - B [95% CI] | verdict |",
             "|---|---|---|---|---|---|---|---|---|"]

    def ci(v):
        return "n/a" if v is None else f"[{v[0]:+.1f}, {v[1]:+.1f}]"

    for p in pairs:
        k = p.get("top_k")
        verdict = (f"{p['a'] if p['difference_mean'] > 0 else p['b']} better" if p["differs"] else "within noise")
        lines.append(f"| {p['a']} | {p['b']} | {p['protocol']} | {p['label_fraction']:.0%} | {p['a_mean']:.1f} | "
                     f"{p['b_mean']:.1f} | {p['difference_mean']:+.1f} {ci(p['difference_ci95'])} | "
                     + (f"{k['difference_mean']:+.1f} {ci(k['difference_ci95'])}" if k else "-") + f" | {verdict} |")
    return "\n".join(lines) + "\n"


def _class_iou(conf: np.ndarray, class_names) -> dict:
    return {n: (None if math.isnan(v) else round(float(v) * 100, 2)) for n, v in zip(class_names, iou_per_class(conf))}


def _report(comparisons: list[dict], task) -> str:
    class_names, label, noun = task.class_names, task.metric_label, task.sample_noun
    test_samples = comparisons[0]["test_samples"] if comparisons else 0
    lines = [f"| student | protocol | labels | random init {label} | distilled {label} | gain [95% CI] | paired runs | gain? |",
             "|---|---|---|---|---|---|---|---|"]
    for c in comparisons:
        ci = "n/a" if c["gain_ci95"] is None else f"[{c['gain_ci95'][0]:+.1f}, {c['gain_ci95'][1]:+.1f}]"
        verdict = ("yes" if c["gain_mean"] > 0 else "no: a loss") if c["claimed"] else "within noise"
        lines.append(f"| {c['student']} ({c['student_kind']}) | {c['protocol']} | {c['label_fraction']:.0%} "
                     f"({c['labeled_samples']} {noun}{'s' if c['labeled_samples'] > 1 else ''}) | {c['random_mean']:.1f} | {c['distilled_mean']:.1f} | "
                     f"{c['gain_mean']:+.1f} {ci} | {c['n_paired']} | {verdict} |")
    topk = [c for c in comparisons if any(k.startswith("top") and k[3:].isdigit() for k in c)]
    if topk:
        lines += ["", "Top-k accuracy of the same runs:", "",
                  "| student | protocol | labels | k | random init | distilled | gain [95% CI] | gain? |",
                  "|---|---|---|---|---|---|---|---|"]
        for c in topk:
            key = next(k for k in c if k.startswith("top") and k[3:].isdigit())
            t = c[key]
            ci = "n/a" if t["gain_ci95"] is None else f"[{t['gain_ci95'][0]:+.1f}, {t['gain_ci95'][1]:+.1f}]"
            verdict = ("yes" if t["gain_mean"] > 0 else "no: a loss") if t["claimed"] else "within noise"
            lines.append(f"| {c['student']} | {c['protocol']} | {c['label_fraction']:.0%} | {key[3:]} | "
                         f"{t['random_mean']:.1f} | {t['distilled_mean']:.1f} | {t['gain_mean']:+.1f} {ci} | {verdict} |")
    present = [n for n in class_names if any(c["iou_per_class"][i][n] is not None for c in comparisons for i in INITS)]
    lines += ["", f"Per-class IoU (%) on the held-out {noun}s, over all paired runs:", "",
              "| student | init | protocol | labels | " + " | ".join(present) + " |", "|---" * (4 + len(present)) + "|"]
    for c in comparisons:
        for init in INITS:
            iou = c["iou_per_class"][init]
            lines.append(f"| {c['student']} | {init} | {c['protocol']} | {c['label_fraction']:.0%} | "
                         + " | ".join(f"{iou[n]:.1f}" if iou[n] is not None else "-" for n in present) + " |")
    what = getattr(task, "description", None) or (
        "Point-wise mIoU on the held-out scenes" if task.metric == "miou" else "Clip accuracy on the held-out voices")
    return (f"{what} ({test_samples} {noun}s), distilled vs random initialisation. Each "
            "paired run draws its own labelled subset and seed, shared by both inits; a gain is claimed only when its "
            "95% interval excludes 0.\n\n" + "\n".join(lines) + "\n")
