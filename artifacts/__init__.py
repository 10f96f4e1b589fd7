"""The contract training and the service share: the artifact format (publish, load, validate),
the production pointer, atomic storage, the evaluation preprocessing, device and precision
choices. Imports only ``models`` (and torch); ``training`` and ``service`` import it."""
