"""BentoML services of candleflow."""
