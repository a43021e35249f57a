"""Run in a subprocess by the tests: the real tritonclient (HTTP and gRPC) against a server.

tritonclient brings its own generated `inference` protos; keeping it out of the pytest process
avoids any clash with other copies. Prints one JSON document on stdout.
"""

from __future__ import annotations

import json
import sys

import grpc
import numpy as np
import tritonclient.grpc as triton_grpc
import tritonclient.http as triton_http
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

MODEL = "fraud_rf"


def _http(url: str, matrix: np.ndarray) -> dict:
    client = triton_http.InferenceServerClient(url)
    tensor = triton_http.InferInput("features", list(matrix.shape), "FP32")
    tensor.set_data_from_numpy(matrix, binary_data=False)
    outputs = [
        triton_http.InferRequestedOutput(name, binary_data=False)
        for name in ("probability", "is_fraud")
    ]
    result = client.infer(MODEL, [tensor], outputs=outputs)
    metadata = client.get_model_metadata(MODEL)
    binary = triton_http.InferInput("features", list(matrix.shape), "FP32")
    binary.set_data_from_numpy(matrix)  # the client's default: the binary data extension
    defaults = client.infer(MODEL, [binary])  # and binary outputs, by default too
    return {
        "live": client.is_server_live(),
        "ready": client.is_model_ready(MODEL),
        "feature_order": metadata["inputs"][0]["parameters"]["feature_order"],
        "probability": result.as_numpy("probability").tolist(),
        "is_fraud": result.as_numpy("is_fraud").tolist(),
        "extensions": client.get_server_metadata()["extensions"],
        "binary_outputs": [
            output.get("parameters", {}).get("binary_data_size")
            for output in defaults.get_response()["outputs"]
        ],
        "binary_probability": defaults.as_numpy("probability").tolist(),
        "binary_is_fraud": defaults.as_numpy("is_fraud").tolist(),
    }


def _grpc_error(call) -> str:
    try:
        call()
    except InferenceServerException as error:
        return f"{error.status()} {error.message()}"
    except grpc.RpcError as error:
        return f"{error.code()} {error.details()}"
    return "OK"


def _grpc(address: str, matrix: np.ndarray) -> dict:
    client = triton_grpc.InferenceServerClient(address)
    tensor = triton_grpc.InferInput("features", list(matrix.shape), "FP32")
    tensor.set_data_from_numpy(matrix)
    result = client.infer(MODEL, [tensor])
    only_probability = client.infer(
        MODEL, [tensor], outputs=[triton_grpc.InferRequestedOutput("probability")]
    )
    metadata = client.get_model_metadata(MODEL)
    config = client.get_model_config(MODEL).config

    def infer(array: np.ndarray, datatype: str = "FP32", model: str = MODEL):
        tensor = triton_grpc.InferInput("features", list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        return lambda: client.infer(model, [tensor])

    stub = service_pb2_grpc.GRPCInferenceServiceStub(grpc.insecure_channel(address))

    def raw(shape: list[int], payload: bytes):
        request = service_pb2.ModelInferRequest(model_name=MODEL)
        request.inputs.add(name="features", datatype="FP32", shape=shape)
        request.raw_input_contents.append(payload)
        return lambda: stub.ModelInfer(request)

    negative = matrix.copy()
    negative[0, 0] = -1.0
    typed = service_pb2.ModelInferRequest(model_name=MODEL)
    typed_input = typed.inputs.add(name="features", datatype="FP32", shape=list(matrix.shape))
    typed_input.contents.fp32_contents.extend(matrix.ravel().tolist())
    typed_result = stub.ModelInfer(typed)
    return {
        "live": client.is_server_live(),
        "ready": client.is_model_ready(MODEL),
        "platform": metadata.platform,
        "feature_order": config.parameters["feature_order"].string_value,
        "probability": result.as_numpy("probability").tolist(),
        "is_fraud": result.as_numpy("is_fraud").tolist(),
        "selected_outputs": [output.name for output in only_probability.get_response().outputs],
        "typed_contents": np.frombuffer(typed_result.raw_output_contents[0], "<f4").tolist(),
        "errors": {
            "out_of_range": _grpc_error(infer(negative)),
            "int_datatype": _grpc_error(infer(matrix.astype(np.int32), "INT32")),
            "wrong_width": _grpc_error(infer(matrix[:, :-1])),
            "shape_mismatch": _grpc_error(raw([len(matrix), 5], matrix.tobytes())),
            "raw_short": _grpc_error(raw(list(matrix.shape), matrix.tobytes()[:-4])),
            "raw_ragged": _grpc_error(raw(list(matrix.shape), matrix.tobytes()[:-1])),
            "unknown_model": _grpc_error(infer(matrix, model="other_model")),
            "huge_shape": _grpc_error(raw([10**9, matrix.shape[1]], matrix.tobytes())),
        },
        "live_after": client.is_server_live(),
    }


def main() -> None:
    http_url, grpc_address, rows_file = sys.argv[1:4]
    with open(rows_file) as handle:
        rows = json.load(handle)
    client = triton_http.InferenceServerClient(http_url)
    order = client.get_model_metadata(MODEL)["inputs"][0]["parameters"]["feature_order"]
    names = order.split(",")
    matrix = np.array([[row[name] for name in names] for row in rows], dtype=np.float32)
    print(json.dumps({"http": _http(http_url, matrix), "grpc": _grpc(grpc_address, matrix)}))


if __name__ == "__main__":
    main()
