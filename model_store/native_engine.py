"""The forest compiled to native code: Treelite imports the fitted forest, TL2cgen writes it as C,
gcc builds a shared library with one batch entry point of ours (`BATCH_SOURCE`), and the server
calls that through ctypes. Serving needs neither Treelite, TL2cgen nor a compiler: the library
is the artifact, loaded from memory.

The entry point takes the float32 matrix as it is and writes float32 probabilities, so a call
costs one C call; TL2cgen's own predictor builds a DMatrix and crosses its runtime on every call
(17 us for one row on the served model, against 6.7 for ONNX Runtime). Figures, ONNX Runtime
beside it: ops/bench/engines.py.
"""

from __future__ import annotations

import ctypes
import os
import subprocess  # nosec B404 - gcc, with arguments we build, on sources we generate
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import numpy as np

# The compiler; `make system-deps` installs it. Without it a model is saved with the engines
# that could be built, and the reason is in its metadata.
COMPILER = "gcc"
# Trees per translation unit: gcc's time grows faster than a source file's size, and the units
# compile in parallel.
TREES_PER_UNIT = 8
ENTRY_POINT = "fraud_predict_batch"
BATCH_SOURCE = f"""
#include "header.h"

/* Probabilities of the last class for n_rows float32 rows of get_num_feature() values each.
   NaN is a missing value, as TL2cgen's own runtime reads it. */
void {ENTRY_POINT}(const float* rows, int64_t n_rows, float* out) {{
  const int32_t n_features = get_num_feature();
  union Entry* data = malloc(sizeof(union Entry) * (size_t)n_features);
  double result[MAX_N_CLASS];
  for (int64_t i = 0; i < n_rows; ++i) {{
    const float* row = rows + i * n_features;
    for (int32_t j = 0; j < n_features; ++j) {{
      data[j].fvalue = (double)row[j];
      if (isnan(row[j])) data[j].missing = -1;
    }}
    for (int k = 0; k < MAX_N_CLASS; ++k) result[k] = 0.0;
    predict(data, 0, result);
    out[i] = (float)result[MAX_N_CLASS - 1];
  }}
  free(data);
}}
"""


class NativeForest:
    """The compiled library, loaded from its verified bytes: fraud probabilities of float32
    rows. ctypes lets go of the GIL for the call."""

    def __init__(self, library: bytes):
        # From memory: no writable file system needed (the pod's root is read-only). The file
        # stays open for the process's life: the loader knows a library by its path, and a
        # closed descriptor's number, reused, would hand back an earlier forest.
        self._file = os.memfd_create("fraud-forest", os.MFD_CLOEXEC)
        try:
            os.write(self._file, library)
            self._library = ctypes.CDLL(f"/proc/self/fd/{self._file}")
        except OSError:
            os.close(self._file)
            raise
        self.n_features = self._library.get_num_feature()
        self._predict = self._library[ENTRY_POINT]
        self._predict.argtypes = (ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p)
        self._predict.restype = None

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        if matrix.ndim != 2 or matrix.shape[1] != self.n_features:
            raise ValueError(f"rows of {self.n_features} features expected, got {matrix.shape}")
        rows = np.ascontiguousarray(matrix, dtype=np.float32)
        scores = np.empty(len(rows), dtype=np.float32)
        self._predict(rows.ctypes.data, len(rows), scores.ctypes.data)
        return scores


class Tl2cgenEngine:
    """The forest compiled to native code by tl2cgen (the engine and its name). Built at save
    time; sums the trees in float64 like scikit-learn, so its answers are
    scikit-learn's probabilities rounded to float32."""

    name = "tl2cgen"
    artifact = "model.so"
    tolerance = 1e-5

    def build(self, estimator: Any, n_features: int) -> bytes:
        import tl2cgen
        import treelite

        model = treelite.sklearn.import_model(estimator)
        if model.num_feature != n_features:
            raise ValueError(f"the forest has {model.num_feature} features, not {n_features}")
        units = max(1, model.num_tree // TREES_PER_UNIT)
        with TemporaryDirectory(prefix="fraud-forest-") as folder:
            source = Path(folder)
            tl2cgen.generate_c_code(model, folder, params={"parallel_comp": units})
            (source / "batch.c").write_text(BATCH_SOURCE)
            with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
                objects = list(pool.map(_compile, sorted(source.glob("*.c"))))
            library = source / "forest.so"
            _run([COMPILER, "-shared", "-o", str(library), *map(str, objects), "-lm"])
            return library.read_bytes()

    def load(self, artifact: bytes, threads: int = 1) -> NativeForest:
        return NativeForest(artifact)  # one thread: the caller's


def _compile(source: Path) -> Path:
    target = source.with_suffix(".o")
    _run([COMPILER, "-c", "-O3", "-fPIC", "-std=c99", "-o", str(target), str(source)])
    return target


def _run(command: list[str]) -> None:
    done = subprocess.run(command, capture_output=True, text=True)  # nosec B603
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} failed: {done.stderr.strip()[-500:]}")
