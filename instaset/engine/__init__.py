"""The pure workflow engine: the YAML language (:mod:`.model`), trigger matching
(:mod:`.triggers`), conditions, templating, compiled workflows and :func:`.decide.decide` /
:func:`.decide.resume`.

Nothing here does I/O or reads the clock; it imports no I/O module and not the config.

This package file re-exports nothing on purpose: the config imports the language
(:mod:`.model`) on every CLI start, and loading the whole engine with it cost ~90 ms per
command. Import from the submodules.
"""
