"""A second resource kind on the fan-out core, defined only in tests: a
``Square`` lists numbers, its workers square them, the results land in a
ConfigMap. It uses the core as any kind would (chunks, the run's Redis user,
the Indexed Job skeleton, the pod runtime) and nothing of the proxy refresh."""
