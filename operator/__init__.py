"""Control plane: the kopf operator that scrapes, dispatches, follows and merges."""
