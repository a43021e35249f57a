"""The benchmark's load generator: the requests it sends."""

from __future__ import annotations

import re

from ops.bench import loadgen


def request_ids(load, count: int) -> list[bytes]:
    return [re.search(rb"X-Request-ID: (\S+)\r\n", load.request).group(1) for _ in range(count)]


def test_request_ids_are_new_across_steps_so_the_log_takes_every_row_as_new():
    bodies = [b'{"transactions": []}', b'{"transactions": [{}]}']

    def step():
        return loadgen.HttpLoad("http://127.0.0.1:3000/predict", bodies, request_ids=True)

    first, second = request_ids(step(), 50), request_ids(step(), 50)
    assert len(set(first)) == 50 and not set(first) & set(second)
    request = step().request
    head, body = request.split(b"\r\n\r\n", 1)
    assert body in bodies and f"Content-Length: {len(body)}".encode() in head
    assert b"X-Request-ID" not in loadgen.HttpLoad("http://h:1/p", bodies).request
