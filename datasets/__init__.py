"""The data side of CDSP: the ScribbleSup layout, the one dataset, the one joint transform,
and the data tools (`python -m datasets.<tool>`)."""
