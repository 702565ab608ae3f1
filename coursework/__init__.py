"""The group coursework: multi-structure segmentation of male pelvic T2-weighted MR.

Entry points (run from the repository root):

- ``python -m coursework.train [--quick] [--data DIR] [options]``: the main job. Generates the
  synthetic pelvic dataset on first use, trains the baseline, evaluates on held-out test cases and
  writes ``results/<run-name>/``.
- ``python -m coursework.evaluate RUN_DIR``: re-evaluate a saved run from its files.
- ``python -m coursework.predict IN_DIR OUT_DIR``: one label map per input volume (the marking contract).
- ``python -m coursework.mark``: the automated marking.

A group edits ``coursework/config.py`` (settings) and ``coursework/solution.py`` (model, loss,
augmentation, inference); see ``coursework/README.md`` for the brief.
"""
