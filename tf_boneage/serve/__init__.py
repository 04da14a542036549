"""``tf-boneage serve``: a local page and REST endpoint for reading films with a SavedModel.

- :mod:`.app`: the ASGI app (Starlette): the page, ``POST /predict``, ``POST /results.csv``
  and TF Serving's REST URLs;
- :mod:`.reading`: one upload -> the ``predict`` row and overlay, in a removed temporary folder;
- :mod:`.tf_serving`: TF Serving's REST / gRPC contract answered by a loaded SavedModel;
- :mod:`.limits`: the request-body cap and the bounded queue in front of the model;
- :mod:`.client`: a ``POST /predict`` upload built with the standard library;
- ``static/``: the page's HTML, JS and CSS (no other host is contacted).
"""
