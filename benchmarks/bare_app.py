"""A bare FastAPI endpoint with the same request shape as /v1/classify: the serving baseline."""

from typing import Optional

from fastapi import FastAPI
from pydantic import BaseModel

app = FastAPI()


class Body(BaseModel):
    text: Optional[str] = None


@app.post("/v1/classify")
async def classify(body: Body):
    return {"label": "OTHER", "confidence": 1.0}
