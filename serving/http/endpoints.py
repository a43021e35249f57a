"""The handlers of the scoring routes: one method of `ScoringEndpoints` per route's `handler`
(serving/http/routes.py), a request's body in, its answer out, every refusal raised as a
ServingError. The lean path calls them from the route table; the mounted OIP and KServe routes
call them when the lean path is off; BentoML's typed endpoints, which get their bodies decoded
by BentoML, call the `decide_*` methods behind them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from serving.contract.refusals import InvalidInput
from serving.http.answers import Answer
from serving.payments.payment_scoring import PaymentScoring
from serving.protocols import codec, kserve_v1, oip_json
from serving.scoring.admission import Admission
from serving.scoring.scorer import Scorer

OIP_BINARY = b"application/octet-stream"


class Call(NamedTuple):  # a tuple: made on every request, it costs less than a dataclass
    """One scoring request as its handler sees it."""

    body: bytes
    params: dict[str, str]  # the route's path parameters
    request_id: str  # settled by the front door, sent back as X-Request-ID
    durable: bool  # the caller chose the id (so may retry with it): logged before the answer
    header_length: str | None = None  # OIP's Inference-Header-Content-Length


@dataclass
class ScoringEndpoints:
    """What scoring needs of a worker: its admission, its scorer, the body decoders and the
    raw-payment scoring."""

    admission: Admission
    scorer: Scorer
    rows: codec.RowsDecoder
    columns: codec.ColumnsDecoder
    instances: kserve_v1.V1Decoder
    payments: PaymentScoring

    async def predict(self, call: Call) -> Answer:
        matrix, ids = self.rows.decode(call.body)
        return await self.decide_rows(matrix, ids, call.request_id, True, call.durable)

    async def predict_columns(self, call: Call) -> Answer:
        parsed = self.columns.parse(call.body)
        return await self.decide_columns(
            parsed.columns, parsed.data, parsed.transaction_ids, call.request_id, call.durable
        )

    async def score(self, call: Call) -> Answer:
        return Answer(await self.payments.rows_body(call.body, call.request_id, call.durable))

    async def score_columns(self, call: Call) -> Answer:
        payload = await self.payments.columns_body(call.body, call.request_id, call.durable)
        return Answer(payload)

    async def infer(self, call: Call) -> Answer:
        """The Open Inference Protocol: JSON, or JSON then binary tensors."""
        reply = await oip_json.infer(
            self.scorer,
            call.params["name"],
            call.params.get("version"),
            call.body,
            call.header_length,
            (call.request_id, call.durable),
        )
        if reply.json_length is None:
            return Answer(reply.body)
        headers = (
            (b"content-type", OIP_BINARY),
            (oip_json.HEADER_LENGTH.encode(), str(reply.json_length).encode()),
        )
        return Answer(reply.body, headers=headers)

    async def predict_v1(self, call: Call) -> Answer:
        """KServe's V1 protocol: instances as feature lists or as rows by name."""
        kserve_v1.check_model(self.scorer.model.name, call.params["name"])
        matrix, ids = self.instances.decode(call.body)
        try:  # rows by name were held to the contract by their decoder; lists are checked here
            decided = await self.scorer.decide(
                matrix, kserve_v1.PROTOCOL, call.request_id, ids, ids is not None, call.durable
            )
        except InvalidInput as error:
            raise kserve_v1.in_instances(error) from None
        return Answer(kserve_v1.encode(decided, ids))

    async def decide_rows(
        self, matrix: np.ndarray, ids, request_id: str, validated: bool, durable: bool = False
    ) -> Answer:
        decided = await self.scorer.decide(
            matrix, codec.PROTOCOL, request_id, ids, validated, durable
        )
        return Answer(codec.encode_predictions(request_id, ids, decided))

    async def decide_columns(
        self, columns: list[str], data, ids, request_id: str, durable: bool
    ) -> Answer:
        """A columnar request: arranged in the model's order, its values checked, each
        problem located in the columnar body."""
        matrix, ids = self.columns.arrange(columns, data, ids)
        try:
            return await self.decide_rows(matrix, ids, request_id, False, durable)
        except InvalidInput as error:
            raise codec.in_columns(error) from None

    async def decide_payments(self, rows, request_id: str, durable: bool, features: bool) -> Answer:
        """Payments BentoML's types already validated (the typed /score)."""
        return Answer(await self.payments.decide_rows(rows, request_id, durable, features))

    async def decide_payment_columns(
        self, columns: list[str], data, request_id: str, durable: bool, features: bool
    ) -> Answer:
        payload = await self.payments.decide_columns(columns, data, request_id, durable, features)
        return Answer(payload)
