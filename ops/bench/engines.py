"""The forest's engines side by side on one core: microseconds a row at 1, 10, 100 and 1,000 rows,
on the served model and on a deeper forest (200 trees, depth 14, where the forest's share of a
request grows), with each engine's largest difference from scikit-learn.

    python ops/bench/engines.py --out runs/bench-engines

Rows are real test-period rows of make run's table. Engines: scikit-learn itself; the forest
compiled to native code as served (model_store/native_engine.py: TL2cgen's C, gcc -O3, our
batch entry point called through ctypes); ONNX Runtime as it serves when the native library
cannot be loaded (skl2onnx, `zipmap=False`, ai.onnx.ml opset 3's TreeEnsembleClassifier, one
thread); the same graph converted to ai.onnx.ml opset 5's TreeEnsemble operator. Each figure is
the best of 5 repeats of at least 0.3 s of calls, the process pinned to one core."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))

import model_store  # noqa: E402
from model_store.native_engine import Tl2cgenEngine  # noqa: E402
from model_store.onnx_engine import OnnxEngine, OnnxForest  # noqa: E402
from settings import load_settings  # noqa: E402
from training.dataset import load_dataset  # noqa: E402
from training.tune import fit_forest  # noqa: E402

DATA = REPO_ROOT / "data" / "transactions.parquet"
SIZES = (1, 10, 100, 1000)
NATIVE = "native code (served: TL2cgen's C, our batch entry point)"
REPEATS, MIN_SECONDS = 5, 0.3
DEEPER = {"n_estimators": 200, "max_depth": 14, "max_features": "sqrt", "min_samples_leaf": 1}


def per_row_us(predict: Callable[[np.ndarray], np.ndarray], rows: np.ndarray) -> float:
    calls, elapsed = 1, 0.0
    while elapsed < MIN_SECONDS / 10:  # how many calls make a repeat of about MIN_SECONDS
        calls *= 2
        started = time.perf_counter()
        for _ in range(calls):
            predict(rows)
        elapsed = time.perf_counter() - started
    calls = max(1, round(calls * MIN_SECONDS / elapsed))
    best = float("inf")
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(calls):
            predict(rows)
        best = min(best, (time.perf_counter() - started) / calls)
    return 1e6 * best / len(rows)


def onnx_opset5(forest) -> Callable[[np.ndarray], np.ndarray]:
    from skl2onnx import to_onnx

    sample = np.zeros((1, forest.n_features_in_), dtype=np.float32)
    graph = to_onnx(
        forest,
        sample,
        options={id(forest): {"zipmap": False}},
        target_opset={"": 21, "ai.onnx.ml": 5},
    )
    return OnnxForest(graph.SerializeToString()).predict_proba


def compare(name: str, forest, rows: np.ndarray) -> dict:
    forest.n_jobs = 1
    onnx = OnnxEngine()
    engines: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "scikit-learn": lambda m: forest.predict_proba(m)[:, 1],
        "onnxruntime (fallback: opset 3)": onnx.load(
            onnx.build(forest, rows.shape[1])
        ).predict_proba,
    }
    notes = {}
    try:
        engines["onnxruntime (opset 5 TreeEnsemble)"] = onnx_opset5(forest)
    except Exception as error:  # noqa: BLE001 - reported, the comparison goes on
        notes["onnxruntime (opset 5 TreeEnsemble)"] = f"not built: {error!r}"[:200]
    try:
        started = time.perf_counter()
        library = Tl2cgenEngine().build(forest, rows.shape[1])
        notes[NATIVE] = f"built in {time.perf_counter() - started:.0f} s"
        engines[NATIVE] = Tl2cgenEngine().load(library).predict_proba
    except Exception as error:  # noqa: BLE001 - reported, the comparison goes on
        notes[NATIVE] = f"not built: {error!r}"[:200]
    reference = engines["scikit-learn"](rows)
    result = {"model": name, "trees": len(forest.estimators_), "engines": {}}
    for engine, predict in engines.items():
        diff = float(np.abs(predict(rows) - reference).max())
        result["engines"][engine] = {
            "max_abs_diff": diff,
            "us_per_row": {size: per_row_us(predict, rows[:size]) for size in SIZES},
            "note": notes.get(engine, ""),
        }
        print(json.dumps({name: {engine: result["engines"][engine]}}), flush=True)
    result["not_built"] = {e: n for e, n in notes.items() if e not in engines}
    return result


def table(results: list[dict]) -> str:
    lines = [
        "| model | engine | 1 row µs | 10 rows µs/row | 100 rows µs/row | 1,000 rows µs/row "
        "| max diff | note |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for result in results:
        for engine, figures in result["engines"].items():
            per_row = figures["us_per_row"]
            lines.append(
                f"| {result['model']} | {engine} | {per_row[1]:.1f} | {per_row[10]:.2f} "
                f"| {per_row[100]:.2f} | {per_row[1000]:.2f} | {figures['max_abs_diff']:.1e} "
                f"| {figures['note']} |"
            )
        for engine, note in result["not_built"].items():
            lines.append(f"| {result['model']} | {engine} | - | - | - | - | - | {note} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--model", help="the served model's tag (default: the pinned one)")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench-engines")
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {0})
    settings = load_settings()
    dataset = load_dataset(args.data, settings)
    test = dataset.X[dataset.mask(dataset.split.test)]
    rows = test[np.random.default_rng(0).permutation(len(test))[: max(SIZES)]]
    tag = args.model or model_store.current(settings.store.pin_file)
    if not tag:
        raise SystemExit("no model: pin one (make run) or give --model TAG")
    _, served = model_store.load(tag)
    train = dataset.mask(dataset.split.train)
    deeper = fit_forest(DEEPER, settings.seed, 2, dataset.X[train], dataset.y[train])
    args.out.mkdir(parents=True, exist_ok=True)
    results = [
        compare(f"served {tag}", served, rows),
        compare("deeper (200 trees, depth 14)", deeper, rows),
    ]
    markdown = table(results)
    print(markdown)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
