"""Limits shared by the prediction service and its callers: defined here once, at the
bottom of the layers (no imports), so the service, the strategy job's client and the tests
derive them from one place."""

from __future__ import annotations

# most items in one /score or /predict_batch request (413 above it); the strategy job's
# client splits its calls to fit
MAX_ITEMS = 4096
# largest request body of those endpoints (16 MiB: 4,096 /score items of ~60 features)
MAX_BODY_BYTES = 16 * 1024 * 1024
