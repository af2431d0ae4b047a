"""Grafana as code: dashboards and datasources (``build.py``) and the API provisioner
(``provision.py``, ``candleflow grafana provision``)."""
