"""The one exception type for mistakes in what the user asked for."""
from hydra.errors import CompactHydraException


class UserError(CompactHydraException):
    """Bad input (config value, missing file, uncached model...).

    Hydra prints a CompactHydraException as its message alone, with no traceback, and exits
    non-zero; the message is one paragraph that names the bad key and value and says how to fix it.
    """
