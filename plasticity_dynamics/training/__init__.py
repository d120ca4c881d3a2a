"""plasticity_dynamics.training"""
