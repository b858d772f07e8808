"""Publishing: a synthetic dataset with its data card and public report, the stores (a folder, S3), and pull."""
