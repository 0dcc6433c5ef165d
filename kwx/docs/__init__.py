"""Generators of the documentation site's reference pages (docs/reference/*.md) from the code itself: the CLI from
the Typer app, the configuration from the pydantic models, the database from the ORM, the MLflow layout from
``kwx.tracking_layout``. `make docs` (``python -m kwx.docs docs/reference``) writes them before every build, so
they cannot drift from the code."""
