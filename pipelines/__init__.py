"""Kubeflow pipeline definitions (``synthesis``, ``publish``) and their compiler (``python -m
pipelines.compile``), which writes the YAML in ``pipelines/compiled/`` for upload to the Kubeflow UI."""
