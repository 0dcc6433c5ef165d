"""`kwx dashboard`: the operator's read-only web page over the loop's database and the model registry.

``views`` shapes query results into the page's JSON (pure); ``queries`` reads the database (read-only
connections); ``registry`` reads MLflow; ``app`` is the Starlette application with its token check;
``static/`` holds the page and its vendored chart library, served from the installed package (no CDN).
"""
