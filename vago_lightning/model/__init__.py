"""The model: base-model loading (`base`), the LightningModule (`module`), and the pure torch parts
it is built from (`features`, `losses`, `optim`, `batching`), each testable alone."""
