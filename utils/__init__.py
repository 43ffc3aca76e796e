"""Ground floor: helpers with no knowledge of the method (I/O, palette, metrics, distributed...)."""
