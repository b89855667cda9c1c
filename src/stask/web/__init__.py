"""The web layer: the REST API (and, later, the admin UI) over the ``Stask`` facade."""

from stask.web.app import create_app

__all__ = ["create_app"]
