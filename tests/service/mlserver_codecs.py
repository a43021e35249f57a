"""Run by the tests in the OIP clients' venv: MLServer's PandasCodec encodes a data frame as one
input per column (here in reversed column order) and decodes the response. Prints JSON."""

from __future__ import annotations

import json
import sys

import httpx
import pandas as pd
from mlserver.codecs import PandasCodec
from mlserver.types import InferenceResponse


def main() -> None:
    http_url, rows_file = sys.argv[1:3]
    with open(rows_file) as handle:
        rows = json.load(handle)
    frame = pd.DataFrame(rows)
    frame = frame[list(reversed(frame.columns))]
    request = PandasCodec.encode_request(frame)
    body = request.model_dump_json(exclude_none=True).encode()
    answer = httpx.post(
        f"{http_url}/v2/models/fraud_rf/infer",
        content=body,
        headers={"Content-Type": "application/json"},
        timeout=30,
    )
    answer.raise_for_status()
    response = InferenceResponse.model_validate_json(answer.content)
    decoded = PandasCodec.decode_response(response)
    print(
        json.dumps(
            {
                "inputs": [(t.name, t.datatype, t.shape) for t in request.inputs],
                "columns": list(decoded.columns),
                "probability": decoded["probability"].tolist(),
                "is_fraud": decoded["is_fraud"].tolist(),
            }
        )
    )


if __name__ == "__main__":
    main()
