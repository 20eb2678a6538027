"""Data plane: parse candidate lists, check proxies, serve a judge, run a Job pod."""
