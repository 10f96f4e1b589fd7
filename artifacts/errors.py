"""The errors of the artifact contract, shared by the registry and the golden-set check."""


class RegistryError(Exception):
    """A registry operation that cannot be carried out (missing model, bad version ...)."""


class ArtifactValidationError(RegistryError):
    """An artifact whose files do not match its metadata (hash, architecture, class count,
    golden set)."""
