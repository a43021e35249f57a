"""Python gRPC servers side by side for OIP ModelInfer, each alone on one core, with the same
work behind them (the served model, the tensor decoding, the scorer and its batcher, the
response): grpcio's asyncio server (what served until it was measured here), grpcio's sync
server whose thread pool hands each call to the batcher's event loop (what serves), and grpclib
(asyncio, HTTP/2 in Python by h2). Each is
measured closed loop (throughput, CPU per call) and by its held rate (p99 <= 50 ms, no errors),
with the benchmark's gRPC load generator on the other core.

    python ops/bench/grpc_servers.py --out runs/bench-grpc
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc

BENCH = Path(__file__).resolve().parent
REPO_ROOT = BENCH.parents[1]
sys.path.insert(0, str(REPO_ROOT))
sys.path.insert(0, str(BENCH))

from run import (  # noqa: E402
    LOADGEN_PIN,
    PINNING,
    PROFILES,
    SERVER_PIN,
    Server,
    best,
    bodies,
    ladder,
    load,
)

KINDS = ("grpcio_aio", "grpcio_sync_pool", "grpclib")
METHOD = "/inference.GRPCInferenceService/ModelInfer"


def _scorer(tag: str):
    from serving.scoring.runtime import FraudModel
    from serving.scoring.scorer import Scorer
    from settings import load_settings

    settings = load_settings()
    model = FraudModel.load(tag, settings.serving.engine, settings.serving.intra_op_threads)
    return Scorer(model, settings.serving)


async def _decide(scorer, request):
    """ModelInfer's work, as the served endpoint does it (serving/protocols/grpc_server.py)."""
    from serving.protocols import oip
    from serving.protocols.grpc_server import infer_response, request_inputs
    from serving.scoring.scorer import request_id_or_new

    matrix = oip.feature_matrix(scorer.model, request_inputs(request))
    outputs = oip.requested_outputs([output.name for output in request.outputs])
    decided = await scorer.decide(matrix, "grpc", request_id_or_new(request.id))
    return infer_response(request, decided, outputs)


def _infer_handler(infer):
    from tritonclient.grpc import service_pb2 as pb

    return grpc.method_handlers_generic_handler(
        "inference.GRPCInferenceService",
        {
            "ModelInfer": grpc.unary_unary_rpc_method_handler(
                infer,
                request_deserializer=pb.ModelInferRequest.FromString,
                response_serializer=pb.ModelInferResponse.SerializeToString,
            )
        },
    )


async def serve_aio(scorer, port: int) -> None:
    """grpcio's asyncio server, on the batcher's event loop (what served before)."""

    async def infer(request, context):
        return await _decide(scorer, request)

    server = grpc.aio.server(handlers=[_infer_handler(infer)])
    server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    await server.wait_for_termination()


async def serve_sync_pool(scorer, port: int) -> None:
    """grpcio's sync server as it serves (serving/protocols/grpc_server.py): its pool threads
    parse and answer, the scoring runs on this event loop (the batcher's), each call handed over."""
    from serving.protocols import grpc_server
    from serving.scoring.admission import Admission

    server = await grpc_server.start(scorer, Admission(0), "127.0.0.1", port, 64 * 1024 * 1024)
    await asyncio.Event().wait()  # the server stops when it is collected: held until killed
    await grpc_server.stop(server, 0)


async def serve_grpclib(scorer, port: int) -> None:
    from grpclib.const import Cardinality, Handler
    from grpclib.server import Server as GrpclibServer
    from tritonclient.grpc import service_pb2 as pb

    class Inference:
        async def infer(self, stream) -> None:
            request = await stream.recv_message()
            await stream.send_message(await _decide(scorer, request))

        def __mapping__(self):  # noqa: N807 - grpclib's interface
            return {
                METHOD: Handler(
                    self.infer,
                    Cardinality.UNARY_UNARY,
                    pb.ModelInferRequest,
                    pb.ModelInferResponse,
                )
            }

    server = GrpclibServer([Inference()])
    await server.start("127.0.0.1", port)
    await server.wait_closed()


SERVE = {"grpcio_aio": serve_aio, "grpcio_sync_pool": serve_sync_pool, "grpclib": serve_grpclib}


def _ready(port: int, timeout: float = 120) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{port}")
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    finally:
        channel.close()


def measure(kind: str, tag: str, request_bodies: dict, sizes, profile, scratch: Path) -> dict:
    server = Server(kind, [], "", "", "grpc")
    command = [sys.executable, __file__, "serve", kind, str(server.grpc_port), tag]
    log = (scratch / f"{kind}.log").open("w")
    server.process = subprocess.Popen(  # noqa: S603 - this script, fixed arguments
        SERVER_PIN + command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    found = {}
    try:
        _ready(server.grpc_port)
        for size in sizes:
            body = request_bodies[("grpc", size)]
            load(server, body, "concurrency", 8, 2.0)  # warm up
            cpu_before = server.cpu_seconds()
            closed = load(server, body, "concurrency", profile.concurrency, profile.closed_seconds)
            cpu_per_call = (server.cpu_seconds() - cpu_before) / max(closed["requests"], 1)
            held = best(ladder(server, body, size, profile))
            found[str(size)] = {
                "closed_loop_rps": closed["throughput_rps"],
                "closed_loop_errors": closed["errors"],
                "cpu_us_per_call": round(cpu_per_call * 1e6, 1),
                "held_rps": held,
            }
            print(f"{kind} size {size}: {found[str(size)]}", flush=True)
    finally:
        server.process.terminate()
        server.process.wait(30)
    return found


def table(results: dict, sizes) -> str:
    lines = [
        f"gRPC ModelInfer per server ({PINNING})",
        "",
        "| server | rows/call | closed-loop calls/s | CPU µs/call | held calls/s (p99 <= 50 ms) "
        "| held × grpcio aio |",
        "|---|---|---|---|---|---|",
    ]
    for size in sizes:
        base = results.get("grpcio_aio", {}).get(str(size), {}).get("held_rps") or None
        for kind, by_size in results.items():
            row = by_size[str(size)]
            ratio = f"{row['held_rps'] / base:.2f}" if base else "-"
            lines.append(
                f"| {kind} | {size} | {row['closed_loop_rps']:.0f} | {row['cpu_us_per_call']} "
                f"| {row['held_rps']:.0f} | {ratio} |"
            )
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        kind, port, tag = sys.argv[2], int(sys.argv[3]), sys.argv[4]
        scorer = _scorer(tag)
        asyncio.run(SERVE[kind](scorer, port))
        return
    from serving.scoring.runtime import pinned_tag
    from settings import load_settings

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default="quick")
    parser.add_argument("--kinds", default=",".join(KINDS))
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "runs" / "bench-grpc")
    args = parser.parse_args()
    profile = PROFILES[args.profile]
    tag = pinned_tag(load_settings(), REPO_ROOT / "service.py")
    args.out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        scratch = Path(folder)
        request_bodies = bodies(scratch, profile.sizes)
        for kind in args.kinds.split(","):
            results[kind] = measure(kind, tag, request_bodies, profile.sizes, profile, scratch)
    markdown = table(results, profile.sizes)
    print(markdown)
    machine = {"pinning": PINNING, "loadgen": LOADGEN_PIN, "model": tag, "date": time.ctime()}
    report = {"machine": machine, "results": results, "cores": os.cpu_count()}
    (args.out / "results.json").write_text(json.dumps(report, indent=2))
    (args.out / "results.md").write_text(markdown + "\n")


if __name__ == "__main__":
    main()
