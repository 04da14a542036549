"""The ASGI app of ``tf-boneage serve``: a page for reading films, its JSON API, and TF
Serving's REST dialect, over one loaded SavedModel.

Routes:

- ``GET /``: the page (``static/``: HTML, JS and CSS served from the package; nothing from
  another host, so it works offline).
- ``GET /api/model``: which model answers (name, version, its line from
  :func:`tf_boneage.export.shipped.describe`) and the upload limits.
- ``POST /predict``: multipart form with ``file`` (PNG, JPEG 8/16 bit or DICOM) and optional
  ``sex`` (M / F; a DICOM's PatientSex otherwise), ``birth_date`` and ``study_date``
  (YYYY-MM-DD) or ``chronological_age`` (months or ``10y6m``), ``force`` (1: an age for a
  film QC rejects too). Answers the ``predict`` row as JSON plus ``overlay_png`` (base64 PNG):
  :func:`tf_boneage.serve.reading.read_film`.
- ``POST /results.csv``: ``{"rows": [...]}`` -> the CSV ``predict --out`` writes (same columns).
- ``GET /v1/models/NAME[/versions/V][/metadata]``, ``POST /v1/models/NAME[/versions/V]:predict``:
  TF Serving's REST API (:mod:`tf_boneage.serve.tf_serving`).

Every error is JSON with a 4xx / 5xx status and a message; no traceback reaches a client.
"""

from __future__ import annotations

import dataclasses
import io as pyio
import logging
from pathlib import Path

import pandas as pd
from starlette.applications import Starlette
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from tf_boneage.data import io
from tf_boneage.inference import predict
from tf_boneage.serve import limits, reading, tf_serving

STATIC = Path(__file__).with_name("static")
log = logging.getLogger("tf_boneage.serve")


@dataclasses.dataclass(frozen=True)
class Settings:
    """Limits of a server: ``max_mb`` per request body, ``max_megapixels`` per film (from its
    header, before decoding), ``max_waiting`` requests queued behind the model."""

    max_mb: float = 64.0
    max_megapixels: float = io.MAX_PIXELS / 1e6
    max_waiting: int = 16


class Server:
    """One loaded SavedModel version and what the routes need of it."""

    def __init__(self, version_dir, name: str | None = None, settings: Settings = Settings()):
        from tf_boneage.export import load, shipped

        self.path = Path(version_dir).resolve()
        if not self.path.name.isdigit():
            raise ValueError(f"{self.path}: not a version folder (TF Serving's NAME/VERSION)")
        self.version = int(self.path.name)
        self.name = name or self.path.parent.name
        self.settings = settings
        meta = load.metadata(self.path)
        self.description = shipped.describe(self.path, meta)
        self.synthetic = shipped.trained_on_synthetic(meta)
        self.loaded = load.saved_model(self.path)
        self.tf_metadata = tf_serving.metadata_body(self.path, self.name, self.version)
        self.queue = limits.Queue(settings.max_waiting)


def _error(status: int, message: str, **extra) -> JSONResponse:
    return JSONResponse({"error": message, **extra}, status_code=status)


async def _form(request: Request, server: Server):
    """The multipart form, held in memory (the body cap bounds it): no upload is spooled to
    a file of its own outside :mod:`.reading`'s temporary folder."""
    parser = MultiPartParser(request.headers, request.stream(), max_files=1, max_fields=16)
    parser.spool_max_size = int(server.settings.max_mb * 2**20) + 1
    return await parser.parse()


def _film(form) -> reading.Film:
    upload = form.get("file")
    if upload is None or isinstance(upload, str):
        raise reading.FilmError('no file: send the film as the multipart field "file"', 400)
    upload.file.seek(0)
    data = upload.file.read()

    def text(key):
        value = form.get(key)
        return value.strip() or None if isinstance(value, str) else None

    sex = text("sex")
    return reading.Film(
        data=data,
        filename=upload.filename or "film",
        sex=sex.upper() if sex else None,
        birth_date=text("birth_date"),
        study_date=text("study_date"),
        age=text("chronological_age"),
        force=text("force") in ("1", "true", "on", "yes"),
    )


async def page(request: Request) -> Response:
    return FileResponse(STATIC / "index.html")


async def model_info(request: Request) -> Response:
    server: Server = request.app.state.server
    return JSONResponse(
        {
            "name": server.name,
            "version": server.version,
            "description": server.description,
            "synthetic": server.synthetic,
            "max_mb": server.settings.max_mb,
            "max_megapixels": server.settings.max_megapixels,
            "columns": list(predict.COLUMNS),
        }
    )


async def predict_film(request: Request) -> Response:
    server: Server = request.app.state.server
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return _error(415, "send a multipart/form-data upload with the film in the field 'file'")
    try:
        form = await _form(request, server)
    except MultiPartException as exc:
        return _error(400, f"malformed upload: {exc.message}")
    film = None
    try:
        film = _film(form)
        reading.check(film)  # cheap refusals before the queue
        pixels = int(server.settings.max_megapixels * 1e6)
        row = await server.queue.run(reading.read_film, server.loaded, film, pixels)
    except reading.FilmError as exc:
        return _error(exc.status, str(exc), file=reading.label(film.filename if film else ""))
    except limits.Busy as exc:
        return _error(503, str(exc))
    finally:
        await form.close()
    return JSONResponse(row)


async def results_csv(request: Request) -> Response:
    try:
        doc = await request.json()
        rows = doc["rows"]
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            raise TypeError
    except (ValueError, KeyError, TypeError):
        return _error(400, 'send JSON {"rows": [result rows of /predict]}')
    text = pyio.StringIO()
    pd.DataFrame(rows, columns=list(predict.COLUMNS)).to_csv(text, index=False)
    return Response(
        text.getvalue(),
        media_type="text/csv",
        headers={"content-disposition": 'attachment; filename="boneage_results.csv"'},
    )


async def tf_serving_api(request: Request) -> Response:
    server: Server = request.app.state.server
    try:
        target = tf_serving.parse_path(request.url.path)
        tf_serving.check_served(target, server.name, server.version)
    except tf_serving.NotFound as exc:
        return _error(404, str(exc))
    wants = "POST" if target.verb == "predict" else "GET"
    if request.method != wants:
        return _error(405, f"{target.verb} takes {wants}, not {request.method}")
    if target.verb == "status":
        return JSONResponse(tf_serving.status_body(server.version))
    if target.verb == "metadata":
        return JSONResponse(server.tf_metadata)
    body = await request.body()
    try:
        status, doc = await server.queue.run(tf_serving.rest_predict, server.loaded, body)
    except limits.Busy as exc:
        return _error(503, str(exc))
    return JSONResponse(doc, status_code=status)


async def _not_found(request: Request, exc) -> Response:
    return _error(getattr(exc, "status_code", 404), getattr(exc, "detail", "not found"))


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unhandled error on %s", request.url.path)
    return _error(500, f"internal error: {type(exc).__name__}")


def create_app(
    model=None, name: str | None = None, settings: Settings = Settings(), say=None
) -> limits.BodyLimit:
    """The app over ``model`` (``saved_models/NAME`` or a version folder; None: the shipped
    model, :func:`tf_boneage.export.shipped.resolve`, which names it through ``say``),
    served as ``name`` (default: the model folder's name), loaded once here."""
    from starlette.exceptions import HTTPException

    from tf_boneage.export import shipped

    path = shipped.resolve(model, say=say)
    server = Server(path, name, settings)
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/api/model", model_info),
            Route("/predict", predict_film, methods=["POST"]),
            Route("/results.csv", results_csv, methods=["POST"]),
            Route("/v1/models/{rest:path}", tf_serving_api, methods=["GET", "POST"]),
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        exception_handlers={HTTPException: _not_found, Exception: _server_error},
    )
    app.state.server = server
    wrapped = limits.BodyLimit(app, int(settings.max_mb * 2**20))
    wrapped.state = app.state  # ``create_app(...).state.server``: the loaded model and limits
    return wrapped
