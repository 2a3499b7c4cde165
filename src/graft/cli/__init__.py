"""The command line: `graft train`, `predict`, `evaluate`, `summary`, `backbones`, `demo`, `cache`."""
