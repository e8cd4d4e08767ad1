"""Alert rules, sinks and webhook delivery."""
