"""Model families, one folder each: config, checkpoint loader and preprocessing side by side."""
