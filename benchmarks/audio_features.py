"""What an audio run's pre-trained networks know: label-free and few-label diagnostics of their frozen features.

    .venv/bin/python benchmarks/audio_features.py RUN_DIR [--stages dino unfused] [--dataset DIR]
                                                  [--subsets 5] [--out DIR]

For each stage (a folder of ``RUN_DIR`` with a ``student.json`` of task ``clip_features``:
``dino_audio``, ``unfused``) and for the same network from random initialisation, both with
BatchNorm statistics recalibrated on the training clips (no labels; as the evaluate stage does),
on the pooled embedding of each clip's runtime input (the centred 1 s log-mel):

- ``1-NN``: accuracy (%) of the test voices' clips, each given the word of its nearest training
  clip (cosine similarity of the embeddings z-scored with the training clips' statistics);
- ``LP 10%`` / ``LP 100%``: the evaluate stage's linear probe
  (:func:`pipelines.evaluate.protocols.fit_linear_probe`, 300 Adam steps, lr 0.01) on 10% of the
  training clips (mean over ``--subsets`` random subsets) and on all of them; test accuracy (%);
- ``purity``: k-means (32 clusters, the ``unfused`` stage's :func:`pipelines.audio.unfused.pseudo_labels`:
  PCA-whitened to 64, L2 norm) of the training clips' and the pool's embeddings, and the share
  of training clips whose cluster's majority word is their own (%), the figure the ``unfused``
  stage logs; pseudo-labels that do not follow the words cannot teach them;
- ``speaker LP``: a linear probe of the speaker on half of the training clips, accuracy (%) on
  the other half: how much of the embedding is voice rather than word.

Chance levels are printed with the table. Words are read for these figures only. The
dataset is ``RUN_DIR/<the keywords stage>/keywords`` unless ``--dataset`` names one.
Writes ``audio_features.json`` and ``.md`` into ``--out`` (default
``benchmarks/results/audio_features/<run name>``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._common import header_line, load_average, report_header, write_report  # noqa: E402
from modalities.audio.logmel import LogMelSpec  # noqa: E402
from modalities.audio.students import build_audio_student  # noqa: E402
from pipelines.audio.data import eval_input, load_splits, read_log_mels  # noqa: E402
from pipelines.audio.unfused import embed, pseudo_labels, purity  # noqa: E402
from pipelines.evaluate.clip_classification import recalibrate_batchnorm  # noqa: E402
from pipelines.evaluate.protocols import fit_linear_probe  # noqa: E402


class _Layout:
    train, test, pool = "train", "test", "pool"


def find_dataset(run: Path) -> Path:
    hits = sorted(p.parent for p in run.glob("*/keywords/dataset.json"))
    if not hits:
        raise SystemExit(f"{run}: no keywords dataset (<stage>/keywords/dataset.json); pass --dataset")
    return hits[0]


def probe_accuracy(ftr, ytr, fte, yte, num_classes: int, idx: np.ndarray, seed: int) -> float:
    clf = fit_linear_probe(ftr[idx], ytr[idx], num_classes, 300, 1e-2, seed)
    return float((clf(fte).argmax(1) == yte).float().mean() * 100)


def diagnostics(net, data: dict, subsets: int, seed: int) -> dict:
    recalibrate_batchnorm(net, torch.from_numpy(data["xtr"])[:, None], 256)
    ftr, fte = torch.from_numpy(embed(net, data["xtr"])), torch.from_numpy(embed(net, data["xte"]))
    ytr, yte, C = data["ytr"], data["yte"], data["num_classes"]
    mean, std = ftr.mean(0), ftr.std(0).clamp_min(1e-6)
    sim = F.normalize((fte - mean) / std, dim=1) @ F.normalize((ftr - mean) / std, dim=1).T
    out = {"nn1": float((ytr[sim.argmax(1)] == yte).float().mean() * 100)}
    n10 = max(C, int(round(0.1 * len(ytr))))
    lp10 = [probe_accuracy(ftr, ytr, fte, yte, C, np.random.default_rng([seed, k]).choice(len(ytr), n10, replace=False),
                           seed + k) for k in range(subsets)]
    out["lp10"], out["lp10_std"] = float(np.mean(lp10)), float(np.std(lp10))
    out["lp100"] = probe_accuracy(ftr, ytr, fte, yte, C, np.arange(len(ytr)), seed)
    fpool = embed(net, data["xpool"]) if len(data["xpool"]) else np.zeros((0, ftr.shape[1]), np.float32)
    clusters = pseudo_labels(np.concatenate([ftr.numpy(), fpool]), 32, 64, seed)
    out["purity"] = purity(clusters[: len(ytr)], [str(int(y)) for y in ytr])
    perm = np.random.default_rng(seed).permutation(len(ytr))
    half = len(perm) // 2
    spk = data["speakers"]
    out["speaker_lp"] = float((fit_linear_probe(ftr[perm[:half]], spk[perm[:half]], int(spk.max()) + 1, 300, 1e-2, seed)(
        ftr[perm[half:]]).argmax(1) == spk[perm[half:]]).float().mean() * 100)
    return out


def load_data(root: Path, spec: LogMelSpec) -> dict:
    splits = load_splits(root, _Layout)
    classes = splits.classes

    def inputs(mels) -> np.ndarray:  # (N, n_mels, frames) runtime inputs of the readable clips
        kept = [m for m in mels if m is not None]
        return np.stack([eval_input(m, spec) for m in kept]).astype(np.float32) if kept \
            else np.zeros((0, spec.n_mels, spec.n_frames), np.float32)

    tr, _ = read_log_mels([i.path for i in splits.train], spec, crop=True)
    te, _ = read_log_mels([i.path for i in splits.test], spec, crop=True)
    po, _ = read_log_mels(splits.pool, spec, crop=False)  # as the unfused stage: the centred 1 s of each
    train = [i for i, m in zip(splits.train, tr) if m is not None]
    test = [i for i, m in zip(splits.test, te) if m is not None]
    speakers = sorted({i.speaker or "" for i in train})
    return {"xtr": inputs(tr), "xte": inputs(te), "xpool": inputs(po), "num_classes": len(classes),
            "ytr": torch.tensor([classes.index(i.label) for i in train]),
            "yte": torch.tensor([classes.index(i.label) for i in test]),
            "speakers": torch.tensor([speakers.index(i.speaker or "") for i in train]), "num_speakers": len(speakers)}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run", type=Path)
    ap.add_argument("--stages", nargs="+", default=["dino", "unfused"])
    ap.add_argument("--dataset", type=Path, default=None)
    ap.add_argument("--subsets", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args(argv)
    load_start = load_average()
    root = args.dataset or find_dataset(args.run)
    rows, cache = [], {}
    for stage in args.stages:
        record_path = args.run / stage / "student.json"
        if not record_path.is_file():
            raise SystemExit(f"{record_path}: no student record (is {stage} a finished audio stage of this run?)")
        record = json.loads(record_path.read_text())
        spec = LogMelSpec.from_dict(record["input"], f"{record_path} input")
        key = (spec.mean, spec.std)
        if key not in cache:
            cache[key] = load_data(root, spec)
        data = cache[key]
        for init in ("pre-trained", "random init"):
            torch.manual_seed(args.seed)
            net = build_audio_student(record["kind"], record["kwargs"])
            if init == "pre-trained":
                net.load_state_dict(load_file(str(args.run / stage / record["weights"])))
            rows.append({"stage": stage, "init": init, **diagnostics(net, data, args.subsets, args.seed)})
            print(rows[-1], flush=True)
    d = next(iter(cache.values()))
    report = {**report_header("audio_features", load_start, "n/a"), "run": str(args.run), "dataset": str(root),
              "train_clips": len(d["ytr"]), "test_clips": len(d["yte"]), "pool_clips": len(d["xpool"]),
              "words": d["num_classes"], "speakers": d["num_speakers"], "rows": rows}
    md = header_line(report) + [
        f"{args.run}: {len(d['ytr'])} training clips ({d['num_speakers']} voices), {len(d['yte'])} test clips of "
        f"unseen voices, {len(d['xpool'])} pool clips, {d['num_classes']} words. Chance: words "
        f"{100 / d['num_classes']:.1f}%, speakers {100 / d['num_speakers']:.1f}%.", "",
        "| stage | init | 1-NN % | LP 10% (sd) | LP 100% | k-means purity % | speaker LP % |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['stage']} | {r['init']} | {r['nn1']:.1f} | {r['lp10']:.1f} ({r['lp10_std']:.1f}) | {r['lp100']:.1f} | "
           f"{r['purity']:.1f} | {r['speaker_lp']:.1f} |" for r in rows]
    write_report(args.out or Path("benchmarks/results/audio_features") / args.run.name, "audio_features", report,
                 "\n".join(md) + "\n")


if __name__ == "__main__":
    main()
