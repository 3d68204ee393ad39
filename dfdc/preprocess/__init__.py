"""Preprocessing stages' logic: faces on real videos (:mod:`.detect`), crops for every video with the fakes'
SSIM diff masks (:mod:`.crops`), face-track clips (:mod:`.clips`), the degraded holdout (:mod:`.degrade`).

Each function takes the tables of the stage before it and returns
(items table, per-video status table). Bad input is recorded in the status
table (``ok``, ``error``) and skipped; it never stops the run. The package
imports nothing, so each stage depends on its own module only.
"""
