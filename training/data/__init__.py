"""The data side of training: where images come from (``sources``), how they are split
(``splits``), batched and augmented (``batches``)."""
