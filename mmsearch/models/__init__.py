"""Model families, each in its own folder with config, checkpoint loader and preprocessing."""
