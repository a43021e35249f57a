"""The ceiling of the benchmark: a bare ASGI application under uvicorn (uvloop, httptools) that
answers every request with a fixed /predict-shaped body, without reading a model. Nothing served
from Python on this machine answers faster.

    uvicorn ceiling:app --app-dir ops/bench/floor --port 3400
"""

from __future__ import annotations

BODY = (
    b'{"request_id":"r","model_tag":"fraud_rf:constant","predictions":[{"transaction_id":null,'
    b'"fraud_probability":0.001,"is_fraud":false,"threshold":0.35,"model_tag":"fraud_rf:constant",'
    b'"request_id":"r"}]}'
)
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope, receive, send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole body, as a real handler would
        message = await receive()
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
