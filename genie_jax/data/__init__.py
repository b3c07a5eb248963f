"""Video data: episode sources, the grain frame-window loader and dataset tooling."""
