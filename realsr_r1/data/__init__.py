"""Image IO, input sources, GT preparation and WebDataset shards."""
