"""The base layer: errors, tensor information, the Runner protocol, accuracy and levels.

It imports nothing else of accelflow, so every other layer may use it.
"""

VERSION = "0.1.0"
