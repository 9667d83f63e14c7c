"""A bare FastAPI endpoint validating the same body as POST /v1/recognitions, without Kafka.

The ceiling for the recognition service: what FastAPI and pydantic cost on their own.
"""

from __future__ import annotations

from fastapi import FastAPI

from services.recognition.models import Accepted, RecognitionIn

app = FastAPI()


@app.post("/v1/recognitions", status_code=202, response_model=Accepted)
async def post_recognition(body: RecognitionIn) -> Accepted:
    return Accepted(event_id=body.event_id or "bare")
