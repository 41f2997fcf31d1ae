"""The KServe predictor for extractive QA.

It answers through `QAModel.answer` — the same windowing and decoding as `distilqa predict` — so
the endpoint and the batch command cannot disagree. Requests are validated in `requests`, batched
across clients in `batching`, and every response carries the compute time it cost.
"""

from __future__ import annotations

import uuid
from typing import Any

import kserve
from distilqa.serving.batching import MicroBatcher
from distilqa.serving.requests import InvalidRequest, Options, parse_v1, parse_v2
from distilqa.serving.settings import ServeSettings
from kserve.errors import InvalidInput
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from prometheus_client import Counter, Histogram

from distilqa.decode import Answer
from distilqa.inference import BatchConfig, QAModel, share_cores
from distilqa.squad import Example

BATCH_SIZE = Histogram("distilqa_batch_questions", "Questions per model batch", buckets=(1, 2, 4, 8, 16, 32, 64, 128))
BATCH_SECONDS = Histogram(
    "distilqa_batch_seconds",
    "Compute time of one model batch",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
# the deploy step's error-rate check of a canary reads these from /metrics (distilqa.serving.rollout)
REQUESTS = Counter("distilqa_requests", "Predict requests by outcome: ok, invalid (4xx) or error (5xx)", ["outcome"])
WARMUP = Example("warmup", "What is being warmed up?", "The model is being warmed up before it is ready.")


class QAPredictor(kserve.Model):
    def __init__(self, name: str, model_location: str, settings: ServeSettings | None = None) -> None:
        super().__init__(name)
        self.model_location = model_location
        self.settings = settings or ServeSettings()
        self.qa: QAModel | None = None
        self.batcher: MicroBatcher | None = None

    def load(self) -> bool:
        share_cores(self.settings.batching.workers)  # the workers share the cores, as in `distilqa predict`
        self.qa = QAModel.load(self.model_location, self.settings.precision)
        self.batcher = MicroBatcher(self._run, self.settings.batching, on_batch=_observe)
        self._run([(WARMUP, Options(self.settings.decode))])  # ready only once a real inference has run
        self.ready = True
        return True

    def _run(self, items: list[tuple[Example, Options]]) -> list[Answer]:
        assert self.qa is not None
        return self.qa.answer(
            [example for example, _ in items],
            self.settings.window,
            [options.decode for _, options in items],
            BatchConfig(self.settings.windows_per_forward),
            top_k=[options.top_k for _, options in items],
        )

    async def predict(self, payload: Any, headers: dict[str, str] | None = None) -> Any:
        try:
            response = await self._predict(payload)
        except InvalidInput:
            REQUESTS.labels("invalid").inc()
            raise
        except Exception:
            REQUESTS.labels("error").inc()
            raise
        REQUESTS.labels("ok").inc()
        return response

    async def _predict(self, payload: Any) -> Any:
        is_v2 = isinstance(payload, InferRequest)
        try:
            parse = parse_v2 if is_v2 else parse_v1
            request = parse(payload, self.settings.decode, self.settings.limits)
        except InvalidRequest as exc:
            raise InvalidInput(str(exc)) from None
        assert self.batcher is not None
        answers, batch_seconds, batch_size = await self.batcher.submit([(e, request.options) for e in request.examples])
        # a batch is shared: each request is charged its share of the questions
        seconds = batch_seconds * len(answers) / batch_size
        cost = {"compute_seconds": round(seconds, 6), "cost": round(seconds * self.settings.price_per_second, 9)}
        if is_v2:
            return _v2_response(self.name, request.request_id, answers, cost)
        return {"predictions": [_v1_answer(a, request.options.top_k) for a in answers], **cost}

    def stop(self) -> None:
        if self.batcher is not None:
            self.batcher.close()


def _observe(size: int, seconds: float) -> None:
    BATCH_SIZE.observe(size)
    BATCH_SECONDS.observe(seconds)


def _v1_answer(answer: Answer, top_k: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "answer": answer.text,
        "score": round(answer.score, 6),
        "start": answer.start,
        "end": answer.end,
        "is_impossible": answer.is_impossible,
    }
    if top_k > 1:
        out["candidates"] = [
            {"answer": c.text, "start": c.start, "end": c.end, "logit_score": round(c.score, 6)}
            for c in answer.candidates
        ]
    return out


def _v2_response(name: str, request_id: str | None, answers: list[Answer], cost: dict[str, float]) -> InferResponse:
    n = len(answers)
    outputs = [
        InferOutput("answer", [n], "BYTES", [a.text for a in answers]),
        InferOutput("score", [n], "FP32", [float(a.score) for a in answers]),
        InferOutput("start", [n], "INT64", [a.start for a in answers]),
        InferOutput("end", [n], "INT64", [a.end for a in answers]),
    ]
    return InferResponse(request_id or str(uuid.uuid4()), name, outputs, parameters=cost)
