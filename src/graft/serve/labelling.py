"""The labelling page of `graft suggest RUN UNLABELLED/ --label`: a thin FastAPI layer over
graft.labelling's `LabellingSession`, served by uvicorn as `graft serve` is (graft.serve.server).

    GET  /                the page (static/labelling.html: one file, nothing fetched from elsewhere)
    GET  /api/state       the classes, each suggested image (rank, file name, reason, the model's two
                          most likely classes, the decision made), progress, the labels CSV, its
                          skipped file and DATA
    GET  /images/{rank}   the suggested image of that rank, as a JPEG at most THUMBNAIL_SIDE px a side;
                          only suggested images are served (by rank: a path is never read from a request)
    POST /api/decisions   {"rank": R, "label": CLASS or "skip"}: the decision, written to the CSV (a skip to
                          the skipped file beside it) at once
    POST /api/copy        copy the labelled images into DATA (only when the person confirms it on the page)

A request the session refuses (an unknown class, a rank not suggested, a DATA that is a label file)
gets a 4xx with {"detail": "<what is wrong and what to do>"}.
"""

from __future__ import annotations

import io
from importlib.resources import files
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel
from starlette.requests import Request

from ..errors import GraftError
from ..labelling import SKIP, LabellingSession, skipped_file

THUMBNAIL_SIDE = 512


class Decision(BaseModel):
    rank: int
    label: str


class _NotSuggested(GraftError):
    """A rank no suggested image has: 404."""


def create_labelling_app(session: LabellingSession) -> FastAPI:
    """The FastAPI app of the labelling page over `session`."""
    page = files("graft.serve").joinpath("static/labelling.html").read_text(encoding="utf-8")
    app = FastAPI(title="graft suggest --label", docs_url=None, redoc_url=None)
    app.state.session = session

    @app.exception_handler(GraftError)
    async def refuse(request: Request, error: GraftError) -> JSONResponse:
        return JSONResponse({"detail": str(error)}, status_code=404 if isinstance(error, _NotSuggested) else 400)

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(page)

    @app.get("/api/state")
    def state() -> dict:
        return describe(session)

    @app.get("/images/{rank}")
    def image(rank: int) -> Response:
        item = _item(session, rank)
        return Response(_thumbnail(str(item.path)), media_type="image/jpeg", headers={"cache-control": "no-store"})

    @app.post("/api/decisions")
    def decide(decision: Decision) -> dict:
        _item(session, decision.rank)
        session.decide(decision.rank, decision.label)
        return describe(session)

    @app.post("/api/copy")
    def copy() -> dict:
        result = session.copy_into_data()
        return {"copy": result.to_dict(), "state": describe(session)}

    return app


def describe(session: LabellingSession) -> dict:
    """What GET /api/state answers."""
    items = [{"rank": item.rank, "name": _name(str(item.path)), "reason": item.reason,
              "guesses": [{"class": name, "probability": round(probability, 4)} for name, probability in (item.top, item.second)],
              "decision": session.decision(item.rank)} for item in session.items]
    data = str(session.data) if session.data is not None else None
    last = session.last_copy
    next_step = (last.message() if last is not None
                 else "When you are done, copy the labelled images into DATA (the button below), then train again: "
                      f"graft train {data or 'DATA'}")
    return {"classes": session.classes, "skip": SKIP, "items": items, "progress": session.progress(),
            "labelled": session.labelled, "skipped": session.skipped, "total": len(session.items),
            "continued": session.continued, "labels_csv": str(session.labels_csv.absolute()),
            "skipped_csv": str(skipped_file(session.labels_csv).absolute()), "data": data,
            "copy_problem": session.copy_problem(), "last_copy": last.to_dict() if last is not None else None,
            "next": next_step}


def _item(session: LabellingSession, rank: int):
    for item in session.items:
        if item.rank == rank:
            return item
    raise _NotSuggested(f"No suggested image is ranked {rank}; this page shows only the {len(session.items)} "
                        "suggested images.")


def _name(path: str) -> str:
    return Path(path).name


def _thumbnail(path: str) -> bytes:
    """The image at `path`, upright RGB, at most THUMBNAIL_SIDE px a side, as JPEG bytes."""
    from ..data.images import load_image

    image = load_image(path, draft_size=(THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    image.thumbnail((THUMBNAIL_SIDE, THUMBNAIL_SIDE))
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=88)
    return out.getvalue()
