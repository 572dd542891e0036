"""Typed, provider-neutral errors.

Provider modules translate HTTP answers into these; everything above them (failover,
CLI, terraform provider) branches on the type, never on a provider's status code.
Every message is redacted before it is stored, so a key can never leak through str(e).
"""


class KcloudError(Exception):
    """Base error: `str(e)` is one line a user can act on."""

    hint = ""

    def __init__(self, message: str, *, hint: str = "", provider: str = ""):
        from kcloud.redact import redact

        super().__init__(redact(message))
        self.hint = redact(hint) or self.hint
        self.provider = provider

    def details(self) -> str:
        """More lines worth showing under the error line (e.g. a failover table); often none."""
        return ""

    def line(self) -> str:
        """The single line the CLI prints."""
        text = str(self)
        return f"{text} ({self.hint})" if self.hint else text


class ConfigError(KcloudError):
    """Local input is wrong: unknown tier group, bad .config, missing file."""


class CredentialsError(KcloudError):
    """Credentials file missing, malformed or readable by others."""


class ApiError(KcloudError):
    """An error answered by (or on the way to) a provider API."""

    retryable = False


class AuthError(ApiError):
    hint = "check the API key in the credentials file, or create a new key"


class CapacityError(ApiError):
    """No capacity for this type in this region: try the next candidate."""


class QuotaError(ApiError):
    """Account quota or balance does not allow this launch."""


class ImageNotSupported(ApiError):
    """The image cannot run on this instance type."""


class RateLimited(ApiError):
    retryable = True
    hint = "the provider is rate limiting; wait a minute and try again"


class TransientError(ApiError):
    """5xx, timeouts, connection errors, malformed answers: worth a later retry."""

    retryable = True


class NotFound(ApiError):
    pass


class InvalidRequest(ApiError):
    pass


class HostileAnswer(ApiError):
    """An API value that would reach a URL, a file another program parses (ssh config,
    inventory, tfvars) or a command is malformed: nothing is written, nothing is run."""


# Failover moves to the next candidate on these; anything else stops the walk.
NEXT_CANDIDATE = (CapacityError, QuotaError, ImageNotSupported)
