"""Data: corpora in (`corpus`, `audio`), `prepare` to WebDataset shards, the `manifest` that
describes them, and the DataModule that streams them into training (`plan`, `datamodule`)."""
