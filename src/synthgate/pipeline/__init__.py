"""Kubeflow Pipelines from the CLI: compile the pipelines in ``pipelines/`` and submit a compiled one
(``synthgate pipeline compile`` / ``synthgate pipeline submit``). The pipeline definitions and their
components live in the repository (``pipelines/``, ``components/``), not in this package."""
