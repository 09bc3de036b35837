"""Bridges from compiled programs to the tools teams already run.

Each submodule imports its engine lazily and names the extra to install when it is missing:
``lmforge.integrations.mlflow`` (extra ``mlflow``), ``.spark`` (``spark``), ``.otel``
(``otel``). Importing this package imports none of them.
"""
