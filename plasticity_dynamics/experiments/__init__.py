"""plasticity_dynamics.experiments"""
