"""The earliest refusal: a scoring request the worker's admission refuses is answered by the HTTP
protocol itself, as soon as its head is parsed, with no ASGI call at all.

Under overload a refusal is worth only what it saves. Answered through ASGI (uvicorn's request
cycle and task, Starlette, the front door), a refusal costs the worker's core almost half of a
one-transaction answer (ops/bench/results/2026-12-08-overload/), so at twice the capacity
refusing takes the core that answering needs. Here it costs the parse that uvicorn does anyway
and one write. The rule is still the front door's (`FrontDoor.refuse_early`: the route table,
the worker's Admission, the refusal's answer and counts); this class only asks it first. What it
does not handle (a pipelined request behind one in progress, `Expect: 100-continue`, a
connection to close after the answer, an upgrade) goes the usual way, where the front door
admits or refuses it.

For the requests it lets through it notes when their heads were parsed (`ARRIVED` in the ASGI
scope): the admission counts a request's wait from then, so a request that already waited past
the target in the event loop's queue is refused before its body is read (the fresher ones go
first).

uvicorn (through BentoML, which gives no choice of protocol) builds one per connection:
`bentoml_internals.serve_http_with` names this class as its default HTTP protocol. The front
door puts its `refuse_early` in the lifespan state, which uvicorn hands to every connection.
"""

from __future__ import annotations

import time

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

REFUSE = "fraud_bento.refuse_early"  # the lifespan state's key: (method, url, headers) -> bytes
ARRIVED = "fraud_bento.arrived"  # the request scope's key: when its head was parsed


class _NoEvent:
    def set(self) -> None:
        pass


class _Answered:
    """The request cycle of a refused request, already answered: uvicorn drops the rest of its
    body, and the next request on the connection starts as after any answer."""

    response_complete = True
    message_event = _NoEvent()


ANSWERED = _Answered()


class EarlyRefusalProtocol(HttpToolsProtocol):
    def on_headers_complete(self) -> None:
        refuse = self.app_state.get(REFUSE)
        if (
            refuse is not None
            and (self.cycle is None or self.cycle.response_complete)
            and not self.expect_100_continue
            and self.parser.should_keep_alive()
            and not self.parser.should_upgrade()
        ):
            answer = refuse(self.parser.get_method(), self.url, self.headers)
            if answer is not None:
                self.transport.write(answer)
                self.cycle = ANSWERED
                self.on_response_complete()  # the keep-alive timer, as after any answer
                return
        # Its wait starts here, not when the event loop first runs it: under load the loop
        # runs a request's first step a whole turn after reading it, and that turn is queueing.
        self.scope[ARRIVED] = time.perf_counter()
        super().on_headers_complete()
