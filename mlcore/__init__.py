"""Machine-learning core of Skyloop: pure numpy/torch/astropy code, no Django."""
