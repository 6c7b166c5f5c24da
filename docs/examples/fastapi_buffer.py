"""A FastAPI app whose background writes go through ``sqlite_hybrid.WriteBuffer``.

Run: ``APP_DB=app.db uvicorn fastapi_buffer:app`` (the database needs
``CREATE TABLE progress(job TEXT PRIMARY KEY, pct INT)``). Tested by
``hosts/python/test_buffer.py::test_fastapi_lifespan_example``.

* The buffer lives as long as the app: created in the lifespan, closed when the
  app stops (``aclose`` writes everything pending and raises
  ``FlushFailed`` naming what could not be written).
* Progress updates return at once (202): repeated updates of one job coalesce
  into one row write.
* ``/done`` awaits its ticket: the response is sent only once the row is
  committed to the file.
* A full buffer (``backpressure="reject"``) answers 503 with ``Retry-After``.
"""

import os
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

import sqlite_hybrid


@asynccontextmanager
async def lifespan(app: FastAPI):
    buffer = sqlite_hybrid.WriteBuffer(os.environ.get("APP_DB", "app.db"), backpressure="reject")
    app.state.buffer = buffer
    try:
        yield
    finally:
        await buffer.aclose()


app = FastAPI(lifespan=lifespan)


@app.exception_handler(sqlite_hybrid.BufferFull)
async def buffer_full(request: Request, error: sqlite_hybrid.BufferFull) -> JSONResponse:
    return JSONResponse({"detail": str(error)}, status_code=503, headers={"Retry-After": "1"})


class Progress(BaseModel):
    pct: int


@app.put("/jobs/{job}/progress", status_code=202)
def report_progress(job: str, body: Progress, request: Request) -> dict:
    request.app.state.buffer.upsert("progress", {"job": job, "pct": body.pct}, key="job")
    return {"queued": True}


@app.post("/jobs/{job}/done")
async def finish(job: str, request: Request) -> dict:
    ticket = request.app.state.buffer.upsert("progress", {"job": job, "pct": 100}, key="job")
    await ticket  # committed to the file once this returns
    return {"committed": True}
