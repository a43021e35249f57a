"""Run by the tests in the OIP clients' venv: KServe's Python SDK clients (REST and gRPC) with
their defaults: the REST client speaks KServe's V1 protocol unless told otherwise; told v2, it
sends tensors as binary data (the HTTP binary data extension), as gRPC does (raw contents).
Prints one JSON document on stdout."""

from __future__ import annotations

import asyncio
import json
import sys

import numpy as np
from kserve import InferenceGRPCClient, InferenceRESTClient, InferInput, InferRequest, RESTConfig

MODEL = "fraud_rf"


def _request(matrix: np.ndarray) -> InferRequest:
    tensor = InferInput("features", list(matrix.shape), "FP32")
    tensor.set_data_from_numpy(matrix)  # binary_data=True by default
    return InferRequest(model_name=MODEL, infer_inputs=[tensor], request_id="kserve-1")


async def main() -> None:
    http_url, grpc_address, rows_file = sys.argv[1:4]
    with open(rows_file) as handle:
        matrix = np.asarray(json.load(handle), dtype=np.float32)
    rest = InferenceRESTClient(RESTConfig(protocol="v2"))
    _, json_length = _request(matrix).to_rest()  # what the client sends: JSON + binary tail
    response_headers: dict[str, str] = {}
    rest_result = await rest.infer(
        http_url, _request(matrix), model_name=MODEL, response_headers=response_headers
    )
    v1 = InferenceRESTClient(RESTConfig())  # the protocol at its default: V1
    v1_result = await v1.infer(http_url, {"instances": matrix.tolist()}, model_name=MODEL)
    grpc_client = InferenceGRPCClient(grpc_address)
    grpc_result = await grpc_client.infer(_request(matrix))
    print(
        json.dumps(
            {
                "rest": {
                    "id": rest_result.id,
                    "probability": rest_result.outputs[0].as_numpy().tolist(),
                    "is_fraud": rest_result.outputs[1].as_numpy().tolist(),
                    "binary_request": json_length is not None,
                },
                "v1": {
                    "protocol": v1._config.protocol,
                    "probability": [p["fraud_probability"] for p in v1_result["predictions"]],
                    "is_fraud": [p["is_fraud"] for p in v1_result["predictions"]],
                },
                "grpc": {
                    "id": grpc_result.id,
                    "probability": grpc_result.outputs[0].as_numpy().tolist(),
                    "is_fraud": grpc_result.outputs[1].as_numpy().tolist(),
                },
            }
        )
    )
    await rest.close()
    await v1.close()
    await grpc_client.close()


if __name__ == "__main__":
    asyncio.run(main())
