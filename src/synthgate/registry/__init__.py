"""The MLflow model registry with an approval workflow: register every generator version with its
evaluation and gate record, promote (set an alias) only what passed, audit every decision."""
