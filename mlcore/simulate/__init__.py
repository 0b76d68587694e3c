"""Honest simulations of survey images, quasar spectra and volunteer crowds."""
