"""The readers' web app (FastAPI): each reader's personal link shows one image at a time at the
study's display size and takes "real" or "synthetic" (buttons, or the keys R and S; an optional
confidence 1-5, keys 1-5). The next image is always the reader's first unanswered one, so a reload
or a server restart loses nothing and there is no way back to change an answer. Nothing but the
reader's own images is served: no folder listing, never the key. ``/admin/<token>`` lists the
readers and their progress.
"""

# No ``from __future__ import annotations``: FastAPI reads the route handlers' annotations at run
# time, and ``Request`` is imported inside :func:`app` (fastapi stays out of ``synthgate --help``).
import hmac
import html
import threading
import time
from typing import Any
from urllib.parse import parse_qs

from synthgate.evaluation.readers.store import AnswerRefused, Answers
from synthgate.evaluation.readers.study import Study

_STYLE = """body{font-family:system-ui,sans-serif;background:#111;color:#eee;text-align:center;margin:2em}
img{background:#000;display:block;margin:1em auto}button{font-size:1.3em;margin:0 .6em;padding:.5em 1.4em}
.progress{color:#aaa}label{margin:0 .4em}a{color:#9cf}table{margin:auto;border-collapse:collapse}
td,th{border:1px solid #555;padding:.3em .8em}"""
_KEYS = """<script>
document.addEventListener('keydown', function (e) {
  if (e.key === 'r' || e.key === 'R') { document.getElementById('real').click(); }
  if (e.key === 's' || e.key === 'S') { document.getElementById('synthetic').click(); }
  if ('12345'.indexOf(e.key) >= 0 && e.key.length === 1) { document.getElementById('c' + e.key).checked = true; }
});
</script>"""


def _page(title: str, body: str) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{_STYLE}</style></head><body>{body}</body></html>")


def app(study: Study, answers: Answers) -> Any:
    from fastapi import FastAPI, Request
    from fastapi.concurrency import run_in_threadpool
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    api = FastAPI(title="synthgate reader study", docs_url=None, redoc_url=None, openapi_url=None)
    size = int(study.manifest.get("display_size", 256))
    admin = study.admin_token()
    no_store = {"Cache-Control": "no-store"}

    def unknown() -> HTMLResponse:
        return HTMLResponse(_page("Unknown link", "<h1>Unknown reader link</h1><p>Ask the study's organiser for "
                                                  "your personal link.</p>"), status_code=404)

    @api.get("/r/{token}", response_class=HTMLResponse)
    def reading(token: str) -> HTMLResponse:
        reader = answers.reader(token)
        if reader is None:
            return unknown()
        image = answers.next_image(reader)
        n = len(reader.order)
        if image is None:
            return HTMLResponse(_page("Thank you", f"<h1>Thank you, {html.escape(reader.name)}</h1>"
                                      f"<p>All {n} images are answered. You can close this page.</p>"), headers=no_store)
        answers.shown(token, image)
        conf = "".join(f"<label><input type='radio' name='confidence' value='{c}' id='c{c}'>{c}</label>"
                       for c in range(1, 6))
        body = (f"<p class='progress'>{html.escape(reader.name)}: image {reader.answered + 1} of {n}</p>"
                f"<img src='/r/{token}/image/{image}' width='{size}' height='{size}' alt='image to read'>"
                f"<form method='post' action='/r/{token}/answer'>"
                f"<input type='hidden' name='image_id' value='{image}'>"
                f"<p>Is this image real or synthetic?</p>"
                f"<button type='submit' name='answer' value='real' id='real'>Real (R)</button>"
                f"<button type='submit' name='answer' value='synthetic' id='synthetic'>Synthetic (S)</button>"
                f"<p class='progress'>confidence (optional, keys 1-5): {conf}</p></form>{_KEYS}")
        return HTMLResponse(_page("Reader study", body), headers=no_store)

    @api.get("/r/{token}/image/{image_id}")
    def image(token: str, image_id: str) -> Any:
        reader = answers.reader(token)
        if reader is None or image_id not in reader.order:
            return unknown()
        # the bytes only: no Last-Modified or ETag, which would tell images apart by when they were written
        return Response((study.root / "images" / f"{image_id}.png").read_bytes(), media_type="image/png",
                        headers=no_store)

    @api.post("/r/{token}/answer")
    async def answer(token: str, request: Request) -> Any:
        # an HTML form's urlencoded body, parsed here (FastAPI's Form needs python-multipart)
        form = {k: v[-1] for k, v in parse_qs((await request.body()).decode("utf-8", "replace")).items()}
        try:
            confidence = int(form["confidence"]) if form.get("confidence") else None
            await run_in_threadpool(answers.answer, token, form.get("image_id", ""), form.get("answer", ""),
                                    confidence)
        except ValueError:
            return HTMLResponse(_page("Not recorded", "<h1>Not recorded</h1><p>a malformed answer</p>"),
                                status_code=400)
        except AnswerRefused as e:
            link = f"<p><a href='/r/{token}'>continue</a></p>" if e.status != 404 else ""
            return HTMLResponse(_page("Not recorded", f"<h1>Not recorded</h1><p>{html.escape(e.message)}</p>{link}"),
                                status_code=e.status)
        return RedirectResponse(f"/r/{token}", status_code=303)

    @api.get("/admin/{token}", response_class=HTMLResponse)
    def admin_page(token: str) -> HTMLResponse:
        if not hmac.compare_digest(token.encode(), admin.encode()):
            return unknown()
        rows = "".join(f"<tr><td>{html.escape(r.name)}</td><td>{r.answered} / {len(r.order)}</td>"
                       f"<td>{'finished' if r.finished else 'in progress'}</td></tr>" for r in answers.readers())
        done = sum(r.finished for r in answers.readers())
        body = (f"<h1>Reader study</h1><p>{study.manifest['n']} images; {done} reader(s) finished</p>"
                f"<table><tr><th>reader</th><th>answered</th><th></th></tr>{rows}</table>")
        return HTMLResponse(_page("Reader study: admin", body), headers=no_store)

    @api.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    return api


def serve(study: Study, host: str = "127.0.0.1", port: int = 8090, ready: threading.Event | None = None,
          stop: threading.Event | None = None) -> None:
    """Serve the study until ``stop`` (or Ctrl-C)."""
    import uvicorn

    answers = Answers(study)
    server = uvicorn.Server(uvicorn.Config(app(study, answers), host=host, port=port, log_level="warning"))
    if stop is not None:
        def stopper() -> None:
            stop.wait()
            server.should_exit = True
        threading.Thread(target=stopper, daemon=True).start()
    if ready is not None:
        def started() -> None:
            while not server.started:
                time.sleep(0.05)
            ready.set()
        threading.Thread(target=started, daemon=True).start()
    try:
        server.run()
    finally:
        answers.close()


def links(study: Study, base: str) -> dict[str, str]:
    """Every reader's link and the admin page's, under ``base`` (http://host:port)."""
    answers = Answers(study)
    try:
        out = {r.name: f"{base}/r/{r.token}" for r in answers.readers()}
    finally:
        answers.close()
    out["(admin)"] = f"{base}/admin/{study.admin_token()}"
    return out
