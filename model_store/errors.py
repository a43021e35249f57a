"""Typed errors of the model store, so callers can tell an integrity failure from a missing tag."""


class ModelStoreError(Exception):
    """Base class of every model store error."""


class ModelNotFoundError(ModelStoreError):
    pass


class ModelIntegrityError(ModelStoreError):
    """The artifact on disk is not the one that was saved."""

    def __init__(self, tag: str, expected: str, actual: str):
        self.tag, self.expected, self.actual = tag, expected, actual
        super().__init__(
            f"model {tag} failed its integrity check: label sha256 {expected}, "
            f"artifact sha256 {actual}; refusing to load it"
        )


class UntrustedArtifactError(ModelStoreError):
    """The artifact would need types (or a format) that loading does not trust."""


class PromotionError(ModelStoreError):
    pass
