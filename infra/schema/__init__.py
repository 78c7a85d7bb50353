"""The versioned SQL engine: files in ``sql/`` brought to a database, once each.

Import the verbs from :mod:`infra.schema.engine`; the Pulumi resource lives in
:mod:`infra.schema.resource`. This package imports nothing heavy on purpose,
so that ``infra.config`` can import the slug rule cheaply.
"""
