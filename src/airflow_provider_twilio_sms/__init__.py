"""Apache Airflow provider for SMS through Twilio.

Nothing heavy is imported here: DAG files import this package on every parse.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
