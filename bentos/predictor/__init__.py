"""The prediction service: ``bentoml serve bentos/predictor`` (see service.py)."""
