"""hps: hyperparameter search for optimizer studies. ``hps.Client`` talks to a running service."""

from hps.client import ApiError, Client, HpsClientError, ServiceUnavailable

__all__ = ["ApiError", "Client", "HpsClientError", "ServiceUnavailable"]
