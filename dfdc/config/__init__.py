"""Typed params sections, one module per section.

A stage imports :mod:`dfdc.config.base` (the loader) and the modules of the
sections it reads, nothing else, so that DVC's code deps of a stage cover its
own sections only: adding a section reruns no stage. :mod:`dfdc.config.sections`
lists them all, for tools that check a whole params file.
"""
