"""Loopback emulator of the Lambda Cloud and DataCrunch/Verda APIs (see README.md).

It imports nothing from the rest of kcloud: a misreading of the provider
contracts must not be able to hide in code that the clients share.
"""

from .cli import main
from .emulator import Emulator, EmulatorError, start

__all__ = ["Emulator", "EmulatorError", "main", "start"]
